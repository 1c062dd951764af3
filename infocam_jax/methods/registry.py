"""``config.method`` on the training side: validation, model options, batch transform and loss.

The six WSOL methods of the reference benchmark (clovaai/wsolevaluation ``main.py``
``_wsol_training``):

  method   network (models.create)          batch transform        loss
  cam      GAP + linear head                -                      L(logits, y)
  adl      + Attention-based Dropout Layer  -                      L(logits, y)
  has      = cam                            Hide-and-Seek          L(logits, y)
  cutmix   = cam                            CutMix                 λ L(logits, y) + (1-λ) L(logits, y_π)
  acol     two erasing classifier branches  -                      models.method_loss("acol")
  spg      self-produced guidance heads     -                      models.method_loss("spg")

``L`` is ``config.loss`` (softmax or PC-softmax; multi-label losses only for cam/adl/has/cutmix);
the transforms are ``augment.py``. ACoL and SPG read the ground-truth labels inside the network in
training (the reference's ``model(images, target)``), so their apply gets ``labels=``.

Config fields (``configs/common.py`` defaults = the reference's ``config.py`` defaults):

  method                      one of METHODS ("cam")
  method_options.has_grid_size      HaS cell side in pixels, int >= 0 (4; 0 = off)
  method_options.has_drop_rate      HaS hiding probability per cell, [0, 1] (0.5)
  method_options.cutmix_beta        CutMix Beta(β, β), β > 0 (1.0)
  method_options.cutmix_prob        CutMix probability per batch, [0, 1] (1.0)
  method_options.acol_threshold     ACoL erasing threshold, [0, 1] (0.7)
  method_options.spg_thresholds     SPG (high, low) pairs of its three masks
                                    ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1)), 0 <= low <= high <= 1
  model_options.adl_*               ADL (as before; method "adl" defaults its positions per backbone)
  model_options.large_feature_map   the reference's large_feature_map (False)

Randomness: the train step's key of step ``s`` is ``k_s = fold_in(root, s)``. The batch
transforms draw from ``a_s = fold_in(k_s, AUGMENT_STREAM)``: HaS per example from
``fold_in(a_s, global example index)`` (so the hidden cells do not depend on the device count);
CutMix's apply / λ / box from ``a_s`` (one per global batch, as the reference's one-GPU batch) and
its partner permutation from ``fold_in(a_s', device)`` within each device's shard (so with D
devices images are paired inside shards of B/D). ADL keeps ``fold_in(k_s, device)``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from infocam_jax.methods import augment

METHODS = ("cam", "adl", "has", "acol", "spg", "cutmix")
NETWORK_METHODS = {"cam": "cam", "adl": "adl", "has": "cam", "cutmix": "cam", "acol": "acol",
                   "spg": "spg"}
LABEL_METHODS = ("acol", "spg")  # the network reads the labels in training
MULTI_LABEL_OK = ("cam", "adl", "has", "cutmix")
DEFAULT_SPG_THRESHOLDS = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
# fold_in data of the batch-transform stream (device indices are small: no collision).
AUGMENT_STREAM = 0x7A11
PERM_STREAM = 0x7A12

__all__ = ["METHODS", "TrainMethod", "build", "check_config", "method_of", "model_kwargs",
           "model_options",
           "spg_thresholds"]


def method_of(config) -> str:
    """``config.method`` ("cam" for configs written before the method field existed)."""
    return str(config.get("method", "cam") or "cam")


def _options(config) -> Mapping[str, Any]:
    return config.get("method_options", None) or {}


def spg_thresholds(config) -> tuple[tuple[float, float], ...]:
    """``config.method_options.spg_thresholds`` as three (high, low) float pairs (validated)."""
    raw = _options(config).get("spg_thresholds", DEFAULT_SPG_THRESHOLDS)
    try:
        pairs = tuple((float(h), float(l)) for h, l in raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.method_options.spg_thresholds must be three (high, low) "
                         f"pairs, got {raw!r}") from e
    if len(pairs) != 3 or not all(0.0 <= l <= h <= 1.0 for h, l in pairs):
        raise ValueError(f"config.method_options.spg_thresholds must be three (high, low) pairs "
                         f"with 0 <= low <= high <= 1, got {raw!r}")
    return pairs


def check_config(config) -> str:
    """Validates ``config.method`` and its options; returns the method.

    Everything here is host-side and writes nothing, so ``train.train_single`` runs it (and
    builds the model, which checks the backbone x method pair) before touching the workdir.

    Raises:
      ValueError naming the field: unknown method, an option out of range, a multi-label loss
      with ACoL / SPG.
    """
    method = method_of(config)
    if method not in METHODS:
        raise ValueError(f"config.method must be one of {METHODS}, got {method!r}")
    opts = _options(config)
    known = {"has_grid_size", "has_drop_rate", "cutmix_beta", "cutmix_prob", "acol_threshold",
             "spg_thresholds"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"config.method_options has unknown field(s) {unknown}; valid: "
                         f"{sorted(known)}")
    augment.check_has_options(opts.get("has_grid_size", 4), opts.get("has_drop_rate", 0.5),
                              "config.method_options.")
    augment.check_cutmix_options(opts.get("cutmix_beta", 1.0), opts.get("cutmix_prob", 1.0),
                                 "config.method_options.")
    acol = float(opts.get("acol_threshold", 0.7))
    if not 0.0 <= acol <= 1.0 or math.isnan(acol):
        raise ValueError(f"config.method_options.acol_threshold must be in [0, 1], got {acol!r}")
    spg_thresholds(config)
    if method not in MULTI_LABEL_OK and bool(config.get("multi_label", False)):
        raise ValueError(f"config.method={method!r} trains with single labels (the network "
                         f"erases / guides by the ground-truth class); it cannot be used with "
                         f"config.multi_label=True (config.loss={config.get('loss')!r})")
    return method


def model_options(config) -> dict:
    """Keyword arguments of ``models.create`` for ``config``: ``config.model_options`` and the
    method's (:func:`model_kwargs`).

    ``model_options.adl_positions = ""`` with method "adl" is dropped, so that ``models.create``
    inserts ADL at the backbone's reference positions; with ACoL / SPG the unused ADL options
    are dropped when ``adl_positions`` is empty (a non-empty one reaches ``models.create``,
    which refuses it); ``large_feature_map = False`` (every backbone's default) is dropped too.
    """
    options = dict(config.get("model_options", None) or {})
    method = method_of(config)
    if method == "adl" and not options.get("adl_positions", ""):
        options.pop("adl_positions", None)
    if NETWORK_METHODS[method] in LABEL_METHODS and not options.get("adl_positions", ""):
        # ACoL / SPG networks take no ADL: drop the (unused) ADL defaults of the base config.
        for key in ("adl_positions", "adl_drop_rate", "adl_gamma"):
            options.pop(key, None)
    if not options.get("large_feature_map", False):
        options.pop("large_feature_map", None)
    options.update(model_kwargs(config))
    return options


def model_kwargs(config) -> dict:
    """Keyword arguments of ``models.create`` beyond ``config.model_options`` for the method."""
    method = method_of(config)
    kwargs = {}
    if NETWORK_METHODS[method] != "cam":  # has / cutmix build the CAM network
        kwargs["method"] = NETWORK_METHODS[method]
    if method == "acol":
        kwargs["acol_drop_threshold"] = float(_options(config).get("acol_threshold", 0.7))
    if method == "spg":
        kwargs["spg_thresholds"] = spg_thresholds(config)
    return kwargs


@dataclasses.dataclass(frozen=True)
class TrainMethod:
    """What the per-device train step does differently for one method.

    Attributes:
      name: the method.
      transform: (batch, step_key, device_index) -> (batch, mix) or None (no batch transform);
        ``mix`` is what ``loss`` needs besides the outputs (CutMix: (perm, λ)).
      loss: (outputs, batch, mix) -> scalar mean loss over the shard.
      pass_labels: whether the network's apply takes ``labels=batch["label"]`` in training.
    """
    name: str
    transform: Optional[Callable]
    loss: Callable
    pass_labels: bool

    def forward(self, model, variables, batch, key):
        """``model.apply`` in training mode; returns (outputs, updated collections)."""
        kwargs = {"labels": batch["label"]} if self.pass_labels else {}
        return model.apply(variables, batch["image"], train=True,
                           rngs={"adl": key, "dropout": jax.random.fold_in(key, 1)},
                           mutable=["batch_stats"], **kwargs)


def main_logits(outputs):
    """The [B, M] logits of any method's outputs (outputs[0])."""
    return outputs[0]


def build(config, loss_fn: Callable, classification_loss: Callable) -> Optional[TrainMethod]:
    """The TrainMethod of ``config.method``; None for cam / adl (the plain step).

    Args:
      config: experiment ConfigDict (validated by :func:`check_config`).
      loss_fn: (logits [b, M], batch) -> mean loss (``train.make_loss_fn``).
      classification_loss: (logits [b, M], labels int [b], weights=None) -> mean loss, handed to
        ``models.method_loss`` as the classification term of ACoL / SPG.
    """
    method = check_config(config)
    opts = _options(config)
    if method in ("cam", "adl"):
        return None
    if method == "has":
        grid = int(opts.get("has_grid_size", 4))
        rate = float(opts.get("has_drop_rate", 0.5))

        def has_transform(batch, step_key, device_index):
            images = batch["image"]
            offset = device_index * images.shape[0]
            key = jax.random.fold_in(step_key, AUGMENT_STREAM)
            images = augment.hide_and_seek(key, images, grid, rate, offset)
            return dict(batch, image=images), None

        return TrainMethod(method, has_transform,
                           lambda outputs, batch, mix: loss_fn(main_logits(outputs), batch), False)
    if method == "cutmix":
        beta = float(opts.get("cutmix_beta", 1.0))
        prob = float(opts.get("cutmix_prob", 1.0))

        def cutmix_transform(batch, step_key, device_index):
            key = jax.random.fold_in(step_key, AUGMENT_STREAM)
            perm_key = jax.random.fold_in(jax.random.fold_in(step_key, PERM_STREAM),
                                          device_index)
            images, perm, lam = augment.cutmix(key, batch["image"], beta, prob, perm_key)
            return dict(batch, image=images), (perm, lam)

        def cutmix_loss(outputs, batch, mix):
            perm, lam = mix
            return augment.cutmix_loss(loss_fn, main_logits(outputs), batch, perm, lam)

        return TrainMethod(method, cutmix_transform, cutmix_loss, False)
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    thresholds = spg_thresholds(config)

    def network_loss(outputs, batch, mix):
        del mix
        return models.method_loss(method, outputs, batch["label"],
                                  classification_loss=classification_loss,
                                  spg_thresholds=thresholds)

    return TrainMethod(method, None, network_loss, True)
