"""Jitted, data-parallel WSOL evaluation: forward -> CAM-family maps -> boxes -> metric counts.

One compiled step per batch does everything on device: the model's forward pass, CAM, infoCAM
and infoCAM+ for the ground-truth class, upsampling to the input size, box extraction over the
whole threshold grid, and the update of the integer metric counters. The counters stay on device
across batches (the step adds to them); the host fetches and sums them once at the end, over
devices (and processes). Padded examples (``batch["valid"] == False``) add nothing.

Single-label results (fractions in [0, 1]; ``K`` is a map kind such as ``cam``)::

  num_images, top1_cls, top5_cls, accuracy (= top1_cls, the model-selection metric),
  K/gt_known_loc      box of the GT-class map at ``cam_threshold`` has IoU >= iou_threshold
  K/top1_loc          gt_known_loc and the top-1 class is right
  K/max_box_acc       MaxBoxAcc: largest box, IoU >= iou_threshold, best score threshold
  K/max_box_acc_threshold   the score threshold reaching it
  K/max_box_acc_v2    MaxBoxAccV2: every contour's box, mean over IoU 0.3 / 0.5 / 0.7
  K/max_box_acc_v2_iou30, _iou50, _iou70
  (the max_box_acc keys only with ``box_accuracy``, config ``eval_box_accuracy``, True)

Top-1 Loc uses the GT-class map: when the top-1 class is right, the predicted-class map *is*
the GT-class map, and when it is wrong Top-1 Loc fails whatever the box, so computing boxes for
the predicted class as well would double the box work for the same number.

Multi-label results (``config.multi_label``; M classes, digits for double-digit MNIST)::

  num_images, digit_acc/m (per-class accuracy of ``logit > 0`` vs the multi-hot target),
  cls_acc (mean of digit_acc), exact_match (every class right), accuracy (= cls_acc),
  K/loc_acc           over all (image, present digit) pairs: the box of that digit's map at
                      cam_threshold has IoU >= iou_threshold with that digit's box
  K/loc_acc/m         the same per digit class (NaN when the class never occurs)

The definitions, IoU and counters are those of ``infocam_jax.metrics`` (streaming count
pytrees, merged over batches on device and summed over devices on the host); boxes come from
``infocam_jax.boxes``; maps from ``infocam_jax.cams``.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import boxes, cams, metrics

MAP_KINDS = ("cam", "infocam", "infocam_plus")
MULTI_LABEL_MAP_KINDS = ("cam", "infocam")
KNOWN_MAP_KINDS = ("cam", "infocam", "infocam_plus", "infocam_plus_region")
DISPLAY_NAMES = {"cam": "CAM", "infocam": "infoCAM", "infocam_plus": "infoCAM+",
                 "infocam_plus_region": "infoCAM+ (region rival)"}
V2_IOU_THRESHOLDS = metrics.V2_IOU_THRESHOLDS

Batch = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Static settings of the eval step (hashable: they are baked into the compiled step).

    Attributes:
      image_size: (H, W) the score maps are upsampled to (the network input size).
      upsample: "bicubic" | "bilinear".
      region_size: infoCAM's square region R.
      cam_threshold: score threshold of GT-known / Top-1 Loc (the paper's 0.2).
      iou_threshold: IoU needed for a correct box (0.5).
      num_box_thresholds: n; the MaxBoxAcc grid is ``np.arange(0, 1, 1/n)``.
      map_kinds: map kinds to evaluate, a subset of ``KNOWN_MAP_KINDS``.
      multi_label: sigmoid multi-label evaluation (per-digit metrics) instead of single-label.
      num_classes: M.
      top_k: k of the top-k classification accuracy (5, capped at M).
      box_accuracy: also compute MaxBoxAcc and MaxBoxAccV2 (single-label). False keeps only
        the paper's fixed-threshold metrics (GT-known / Top-1 Loc) and classification: one
        largest-box pass per map instead of a largest-box and an every-contour pass
        (config field ``eval_box_accuracy``, default True).
    """
    image_size: tuple[int, int]
    upsample: str = "bicubic"
    region_size: int = 3
    cam_threshold: float = 0.2
    iou_threshold: float = 0.5
    num_box_thresholds: int = 100
    map_kinds: tuple[str, ...] = MAP_KINDS
    multi_label: bool = False
    num_classes: int = 10
    top_k: int = 5
    box_accuracy: bool = True

    def __post_init__(self):
        unknown = [k for k in self.map_kinds if k not in KNOWN_MAP_KINDS]
        if unknown or not self.map_kinds:
            raise ValueError(f"map_kinds must be a non-empty subset of {KNOWN_MAP_KINDS}, "
                             f"got {self.map_kinds}")
        if self.multi_label and any(k.startswith("infocam_plus") for k in self.map_kinds):
            raise ValueError("multi-label evaluation supports map_kinds ('cam', 'infocam'), "
                             f"got {self.map_kinds}")
        if not 0.0 <= self.cam_threshold < 1.0:
            raise ValueError(f"cam_threshold must be in [0, 1), got {self.cam_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.num_box_thresholds < 1:
            raise ValueError(f"num_box_thresholds must be >= 1, got {self.num_box_thresholds}")
        if self.num_classes < 1 or self.region_size < 1:
            raise ValueError(f"num_classes and region_size must be >= 1, got "
                             f"{self.num_classes}, {self.region_size}")

    @classmethod
    def from_config(cls, config, **overrides) -> EvalSettings:
        """Reads the evaluation fields of a config (docs/interfaces.md); ``overrides`` win."""
        multi_label = bool(config.multi_label)
        default_kinds = MULTI_LABEL_MAP_KINDS if multi_label else MAP_KINDS
        fields = {
            "image_size": tuple(int(s) for s in config.image_size),
            "upsample": str(config.upsample),
            "region_size": int(config.region_size),
            "cam_threshold": float(config.cam_threshold),
            "iou_threshold": float(config.iou_threshold),
            "num_box_thresholds": int(config.num_box_thresholds),
            "map_kinds": tuple(config.get("map_kinds", default_kinds)),
            "box_accuracy": bool(config.get("eval_box_accuracy", True)),
            "multi_label": multi_label,
            "num_classes": int(config.num_classes),
        }
        fields.update(overrides)
        return cls(**fields)

    @property
    def box_thresholds(self) -> np.ndarray:
        """The MaxBoxAcc score-threshold grid, float64 ``[T]``."""
        return np.arange(0.0, 1.0, 1.0 / self.num_box_thresholds)


# ----------------------------------------------------------------------------- maps

def class_maps(map_kinds: tuple[str, ...], features: jax.Array, kernel: jax.Array,
               labels: jax.Array, *, logits: jax.Array | None,
               region_size: int) -> dict[str, jax.Array]:
    """The requested CAM-family maps of one class per image (single-label heads).

    Args:
      map_kinds: kinds from ``KNOWN_MAP_KINDS``.
      features: float ``[B,h,w,K]`` last feature maps.
      kernel: float ``[K,M]`` classifier kernel.
      labels: int ``[B]`` class per image.
      logits: float ``[B,M]`` model outputs: infoCAM+'s rival is the class with the lowest
        logit (bias included), as in the authors' code.
      region_size: infoCAM's R.

    Returns:
      ``{kind: float32 [B,h,w]}``.
    """
    maps = {}
    if any(k in MAP_KINDS for k in map_kinds):
        maps.update(cams.all_maps(features, kernel, labels, region_size, rival="image",
                                  logits=logits))
    if "infocam_plus_region" in map_kinds:
        maps["infocam_plus_region"] = cams.infocam_plus(features, kernel, labels, region_size,
                                                        rival="region")
    return {k: maps[k] for k in map_kinds}


def multilabel_class_maps(kind: str, features: jax.Array, kernel: jax.Array,
                          labels: jax.Array, *, region_size: int) -> jax.Array:
    """Multi-label maps for several labels per image: CAM, or infoCAM (region-summed CAM).

    Args:
      kind: "cam" | "infocam".
      features: float ``[B,h,w,K]``.
      kernel: float ``[K,M]``.
      labels: int ``[B,G]``, the class of each of G (box) slots.
      region_size: infoCAM's R.

    Returns:
      float32 ``[B,G,h,w]``.
    """
    if kind not in MULTI_LABEL_MAP_KINDS:
        raise ValueError(f"multi-label map kind must be one of {MULTI_LABEL_MAP_KINDS}, "
                         f"got {kind!r}")

    def one_slot(slot_labels):
        if kind == "cam":
            return cams.multilabel_cam(features, kernel, slot_labels)
        return cams.multilabel_infocam(features, kernel, slot_labels, region_size)

    return jax.vmap(one_slot, in_axes=1, out_axes=1)(labels)


def predict_maps(settings: EvalSettings, model, variables, images: jax.Array,
                 labels: jax.Array | None = None, *,
                 kernel_fn: Callable[[Any], jax.Array] | None = None) -> dict[str, Any]:
    """Forward pass, score maps at image size and boxes at ``cam_threshold``.

    For visualisation; jit it with ``settings``, ``model`` and ``kernel_fn`` bound.

    Args:
      settings: evaluation settings.
      model: Flax module with ``apply(variables, images, train=False) -> (logits, features)``.
      variables: the model's variables.
      images: float ``[B,H,W,C]``.
      labels: int ``[B]`` classes whose maps to draw; None -> the predicted (top-1) class.
        Multi-label settings use the multi-label maps of that one label per image.
      kernel_fn: ``variables -> [K,M]`` classifier kernel (default ``models.classifier_kernel``).

    Returns:
      ``{"logits": [B,M], "labels": [B], "scoremaps": {kind: [B,H,W] in [0,1]},
      "boxes": {kind: int32 [B,4]}}``.
    """
    kernel_fn = kernel_fn or _default_kernel_fn()
    logits, features = model.apply(variables, images, train=False)
    kernel = kernel_fn(variables)
    if labels is None:
        labels = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    out = {"logits": logits, "labels": labels, "scoremaps": {}, "boxes": {}}
    if settings.multi_label:
        maps = {k: multilabel_class_maps(k, features, kernel, labels[:, None],
                                         region_size=settings.region_size)[:, 0]
                for k in settings.map_kinds}
    else:
        maps = class_maps(settings.map_kinds, features, kernel, labels, logits=logits,
                          region_size=settings.region_size)
    for kind in settings.map_kinds:
        sm = boxes.scoremaps(maps[kind], settings.image_size, settings.upsample)
        out["scoremaps"][kind] = sm
        out["boxes"][kind] = boxes.largest_box(sm, np.array([settings.cam_threshold]))[:, 0]
    return out


def _default_kernel_fn():
    from infocam_jax import models  # imported lazily: the core of evaluate needs no model zoo
    return models.classifier_kernel


# ----------------------------------------------------------------------------- counters

def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _kind(tree, index: int):
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def init_counts(settings: EvalSettings) -> dict[str, Any]:
    """Zero metric counters for one device: a pytree of ``metrics`` count dataclasses.

    Every counter has a leading axis over ``settings.map_kinds`` (the kinds go through box
    extraction together, vmapped, which compiles the box code once rather than per kind).
    Single-label: a ``LocalizationCounts`` (top-1/top-5, GT-known, Top-1 Loc at
    ``cam_threshold``), a ``BoxAccuracyCounts`` (largest box, IoU ``iou_threshold``: MaxBoxAcc)
    and a ``BoxAccuracyCounts`` (every contour, IoU 0.3/0.5/0.7: MaxBoxAccV2); the last two
    only with ``settings.box_accuracy``.
    Multi-label: a ``MultiLabelCounts``, plus the (kind-independent) exact-match count.
    """
    grid = settings.box_thresholds
    n = len(settings.map_kinds)
    if settings.multi_label:
        return {"exact": jnp.zeros((), jnp.int32),
                "ml": _stack([metrics.MultiLabelCounts.empty(
                    settings.num_classes, settings.cam_threshold, settings.iou_threshold)] * n)}
    return {
        "loc": _stack([metrics.LocalizationCounts.empty(settings.cam_threshold,
                                                        settings.iou_threshold)] * n),
        "box": _stack([metrics.BoxAccuracyCounts.empty(
            grid, (settings.iou_threshold,), False)] * n),
        "box_v2": _stack([metrics.BoxAccuracyCounts.empty(grid, V2_IOU_THRESHOLDS, True)] * n),
    } if settings.box_accuracy else {
        "loc": _stack([metrics.LocalizationCounts.empty(settings.cam_threshold,
                                                        settings.iou_threshold)] * n)}


def _check_batch(batch: Batch, settings: EvalSettings):
    required = ["image", "label", "boxes", "box_valid", "valid"]
    if settings.multi_label:
        required += ["labels", "box_labels"]
    missing = [k for k in required if k not in batch]
    if missing:
        raise ValueError(f"batch is missing keys {missing} (see docs/interfaces.md)")


def eval_step(settings: EvalSettings, model, kernel_fn, variables, batch: Batch,
              counts: dict[str, Any]) -> dict[str, Any]:
    """Per-device eval step: adds one (per-device) batch to the counters.

    Knows nothing about its parallel wrapper (no collectives), so ``jax.pmap``, ``jax.jit``
    or ``jax.shard_map`` can run it unchanged.

    Args:
      settings: static evaluation settings.
      model: Flax module, ``apply(variables, images, train=False) -> (logits [B,M],
        features [B,h,w,K])``.
      kernel_fn: ``variables -> [K,M]``.
      variables: model variables.
      batch: dict of docs/interfaces.md (``image`` ``[B,H,W,C]``, ``label`` ``[B]``,
        ``boxes`` ``[B,G,4]``, ``box_valid`` ``[B,G]``, ``valid`` ``[B]``, multi-label also
        ``labels`` ``[B,M]`` and ``box_labels`` ``[B,G]``).
      counts: counters as made by :func:`init_counts`.

    Returns:
      the updated counters (same structure).
    """
    logits, features = model.apply(variables, batch["image"], train=False)
    kernel = kernel_fn(variables)
    valid = batch["valid"].astype(bool)
    update = _multi_label_update if settings.multi_label else _single_label_update
    return update(settings, logits, features, kernel, batch, valid, counts)


def _stacked_scoremaps(settings, maps):
    """``[kinds, ..., h, w]`` maps -> ``[kinds, ..., H, W]`` score maps in one call."""
    flat = maps.reshape((-1,) + maps.shape[-2:])
    sm = boxes.scoremaps(flat, settings.image_size, settings.upsample)
    return sm.reshape(maps.shape[:-2] + tuple(settings.image_size))


def _single_label_update(settings, logits, features, kernel, batch, valid, counts):
    labels = batch["label"].astype(jnp.int32)
    gt_boxes = batch["boxes"].astype(jnp.int32)
    gt_valid = batch["box_valid"].astype(bool)
    maps = class_maps(settings.map_kinds, features, kernel, labels, logits=logits,
                      region_size=settings.region_size)
    sm = _stacked_scoremaps(settings, jnp.stack([maps[k] for k in settings.map_kinds]))

    top1 = metrics.topk_correct(logits, labels, 1) & valid
    top5 = metrics.topk_correct(logits, labels, settings.top_k) & valid
    # One largest-box pass serves GT-known Loc (threshold 0 of the list) and MaxBoxAcc (the
    # grid): the box pass costs the same for any number of thresholds, so this halves the
    # largest-box work compared with LocalizationCounts.update + BoxAccuracyCounts.update.
    thresholds = np.concatenate([[settings.cam_threshold], settings.box_thresholds])

    def count(x, axis=None):
        return jnp.sum(x, axis=axis, dtype=jnp.int32)

    def per_kind(loc, box, box_v2, sm):
        best = boxes.max_contour_iou(sm, thresholds, gt_boxes, gt_valid, multi_contour=False)
        gt_known = (best[:, 0] >= loc.iou_threshold) & valid
        # Top-1 Loc from the GT-class map: see the module docstring.
        loc = loc.merge(loc.replace(top1_cls=count(top1), top5_cls=count(top5),
                                    gt_known_loc=count(gt_known),
                                    top1_loc=count(gt_known & top1), count=count(valid)))
        hits = (best[None, :, 1:] >= jnp.asarray(box.iou_thresholds, jnp.float32)[:, None, None])
        box = box.merge(box.replace(correct=count(hits & valid[None, :, None], axis=1),
                                    count=count(valid)))
        return loc, box, box_v2.update(sm, gt_boxes, gt_valid, valid)

    if not settings.box_accuracy:
        return {"loc": jax.vmap(
            lambda loc, sm: loc.update(logits, labels, sm, gt_boxes, gt_valid, valid))(
                counts["loc"], sm)}
    loc, box, box_v2 = jax.vmap(per_kind)(counts["loc"], counts["box"], counts["box_v2"], sm)
    return {"loc": loc, "box": box, "box_v2": box_v2}


def _multi_label_update(settings, logits, features, kernel, batch, valid, counts):
    targets = batch["labels"]                                              # [B, M]
    gt_boxes = batch["boxes"].astype(jnp.int32)                            # [B, G, 4]
    box_labels = batch["box_labels"].astype(jnp.int32)                     # [B, G]
    box_valid = batch["box_valid"].astype(bool)
    g = box_labels.shape[1]
    # One slot per present label (at most G per image), matched to that label's box(es).
    slot_labels, slot_valid = metrics.present_label_slots(targets, min(g, settings.num_classes))
    exact = jnp.all(metrics.multilabel_cls_correct(logits, targets), axis=-1) & valid
    maps = jnp.stack([multilabel_class_maps(k, features, kernel, slot_labels,
                                            region_size=settings.region_size)
                      for k in settings.map_kinds])                        # [kinds, B, L, h, w]
    sm = _stacked_scoremaps(settings, maps)

    def per_kind(ml, sm):
        return ml.update(logits, targets, sm, slot_labels, slot_valid, gt_boxes, box_labels,
                         box_valid, valid)

    return {"exact": counts["exact"] + jnp.sum(exact, dtype=jnp.int32),
            "ml": jax.vmap(per_kind)(counts["ml"], sm)}


# ----------------------------------------------------------------------------- results

def _float(x) -> float:
    return float(np.asarray(x))


def finalize(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, float]:
    """Turns summed counters (the structure of :func:`init_counts`) into the results dict.

    A fraction with nothing counted (e.g. a digit that never occurs) is NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return _finalize(settings, counts)


def _finalize(settings, counts):
    res: dict[str, float] = {}
    kinds = settings.map_kinds
    if settings.multi_label:
        first = _kind(counts["ml"], 0)
        n = int(first.count)
        res["num_images"] = float(n)
        cls = first.result()
        for c in range(settings.num_classes):
            res[f"digit_acc/{c}"] = _float(cls["cls_acc"][c])
        res["cls_acc"] = _float(cls["mean_cls_acc"])
        res["exact_match"] = int(counts["exact"]) / n if n else float("nan")
        res["accuracy"] = res["cls_acc"]
        for i, kind in enumerate(kinds):
            r = _kind(counts["ml"], i).result()
            res[f"{kind}/loc_acc"] = _float(r["loc_acc_all"])
            for c in range(settings.num_classes):
                res[f"{kind}/loc_acc/{c}"] = _float(r["loc_acc"][c])
        return res
    first = _kind(counts["loc"], 0)
    res["num_images"] = float(int(first.count))
    cls = first.result()
    res["top1_cls"] = _float(cls["top1_cls"])
    res["top5_cls"] = _float(cls["top5_cls"])
    res["accuracy"] = res["top1_cls"]
    for i, kind in enumerate(kinds):
        loc = _kind(counts["loc"], i).result()
        res[f"{kind}/gt_known_loc"] = _float(loc["gt_known_loc"])
        res[f"{kind}/top1_loc"] = _float(loc["top1_loc"])
        if not settings.box_accuracy:
            continue
        box = _kind(counts["box"], i).result()
        res[f"{kind}/max_box_acc"] = _float(box["max_box_acc"][0])
        res[f"{kind}/max_box_acc_threshold"] = _float(box["best_threshold"][0])
        v2 = _kind(counts["box_v2"], i).result()
        for j, iou in enumerate(V2_IOU_THRESHOLDS):
            res[f"{kind}/max_box_acc_v2_iou{round(100 * iou)}"] = _float(v2["max_box_acc"][j])
        res[f"{kind}/max_box_acc_v2"] = _float(v2["mean_max_box_acc"])
    return res


# ----------------------------------------------------------------------------- driver

def _pad_to(batch: Batch, size: int) -> dict[str, np.ndarray]:
    """Pads every array's leading axis to ``size`` (zeros; ``valid`` False on the padding)."""
    b = len(batch["valid"])
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if b < size:
            value = np.concatenate([value, np.zeros((size - b,) + value.shape[1:], value.dtype)])
        out[key] = value
    return out


def make_eval_step(settings: EvalSettings, model, *, num_devices: int,
                   kernel_fn: Callable[[Any], jax.Array] | None = None):
    """``jax.pmap`` of :func:`eval_step` over ``num_devices`` (axis ``"batch"``).

    Returns:
      ``f(replicated_variables, sharded_batch, sharded_counts) -> sharded_counts``; every
      input and output has a leading device axis; the counters' buffers are donated.
    """
    return _make_eval_step(settings, model, num_devices, kernel_fn or _default_kernel_fn())


@functools.lru_cache(maxsize=8)
def _make_eval_step(settings, model, num_devices, kernel_fn):
    # Cached so that repeated evaluations (every epoch of a training run) reuse the compiled
    # step: settings, Flax modules and kernel functions are hashable.
    step = functools.partial(eval_step, settings, model, kernel_fn)
    return jax.pmap(step, axis_name="batch", devices=jax.local_devices()[:num_devices],
                    donate_argnums=(2,))


def replicate(tree, num_devices: int):
    """Stacks a pytree ``num_devices`` times on the first local devices (leading device axis)."""
    devices = jax.local_devices()[:num_devices]
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(np.stack([np.asarray(x)] * num_devices), sharding), tree)


def evaluate(config, model, variables, iterator: Iterable[Batch], *,
             num_devices: int | None = None,
             kernel_fn: Callable[[Any], jax.Array] | None = None,
             max_batches: int | None = None, **overrides) -> dict[str, float]:
    """Evaluates classification and localisation of every map kind over ``iterator``.

    Args:
      config: ml_collections config (fields of docs/interfaces.md).
      model: Flax module, ``apply(variables, images, train=False) -> (logits, features)``.
      variables: unreplicated model variables.
      iterator: yields per-process global batches (docs/interfaces.md); a batch whose size
        does not divide by ``num_devices``, or is smaller than the first, is padded with
        invalid examples, so any iterator works and no batch triggers a recompile.
      num_devices: local devices to split each batch over (default: all local devices).
      kernel_fn: ``variables -> [K,M]`` classifier kernel (default
        ``models.classifier_kernel``).
      max_batches: stop after this many batches (None: exhaust the iterator).
      **overrides: fields of :class:`EvalSettings` overriding the config's.

    Returns:
      flat dict of floats (see the module docstring); fractions in [0, 1].
    """
    num_devices = jax.local_device_count() if num_devices is None else int(num_devices)
    if not 1 <= num_devices <= jax.local_device_count():
        raise ValueError(f"num_devices must be in [1, {jax.local_device_count()}], "
                         f"got {num_devices}")
    settings = EvalSettings.from_config(config, **overrides)
    p_step = make_eval_step(settings, model, num_devices=num_devices, kernel_fn=kernel_fn)
    p_variables = replicate(variables, num_devices)
    p_counts = replicate(init_counts(settings), num_devices)
    size = None
    for i, batch in enumerate(itertools.islice(iterator, max_batches)):
        _check_batch(batch, settings)
        b = len(batch["valid"])
        if size is None:
            size = -(-b // num_devices) * num_devices
        if b > size:
            raise ValueError(f"batch {i} has {b} examples, more than the first batch's {size}")
        per_device = size // num_devices
        sharded = {k: v.reshape((num_devices, per_device) + v.shape[1:])
                   for k, v in _pad_to(batch, size).items()}
        p_counts = p_step(p_variables, sharded, p_counts)
    counts = jax.tree_util.tree_map(lambda x: np.asarray(x).sum(0), p_counts)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        counts = jax.tree_util.tree_map(
            lambda x: np.asarray(multihost_utils.process_allgather(x)).sum(0), counts)
    return finalize(settings, counts)


# ----------------------------------------------------------------------------- reports

def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100.0 * value:.2f}"


def _kinds_in(results: Mapping[str, float], suffix: str) -> list[str]:
    kinds = []
    for key in results:
        kind, _, rest = key.partition("/")
        if rest == suffix and kind not in kinds:
            kinds.append(kind)
    return kinds


def format_table(results: Mapping[str, float]) -> str:
    """Markdown tables of ``results`` in percent ("-" for missing or NaN values).

    Single-label: the paper's Table 1 (rows CAM / infoCAM / infoCAM+; columns GT-known Loc,
    Top-1 Loc, Top-1 Cls, Top-5 Cls, MaxBoxAccV2). Multi-label: the paper's Table 2 (per-digit
    classification accuracy) and CAM vs infoCAM localisation accuracy, overall and per digit.
    """
    def get(key):
        return results.get(key, float("nan"))

    classes = sorted(int(k.split("/")[1]) for k in results if k.startswith("digit_acc/"))
    if not classes:
        lines = ["| Map | GT-known Loc | Top-1 Loc | Top-1 Cls | Top-5 Cls | MaxBoxAccV2 |",
                 "|---|---:|---:|---:|---:|---:|"]
        for kind in _kinds_in(results, "gt_known_loc"):
            cells = [get(f"{kind}/gt_known_loc"), get(f"{kind}/top1_loc"), get("top1_cls"),
                     get("top5_cls"), get(f"{kind}/max_box_acc_v2")]
            lines.append(f"| {DISPLAY_NAMES.get(kind, kind)} | "
                         + " | ".join(_pct(c) for c in cells) + " |")
        return "\n".join(lines) + "\n"
    header = "| " + " | ".join(str(c) for c in classes) + " |"
    rule = "|---|" + "---:|" * (len(classes) + 1)
    lines = ["Classification accuracy (%) per digit", "",
             "| Type " + header + " Mean |", rule,
             "| accuracy | " + " | ".join(_pct(get(f"digit_acc/{c}")) for c in classes)
             + f" | {_pct(get('cls_acc'))} |", "",
             f"Exact-match accuracy: {_pct(get('exact_match'))} %", "",
             "Localisation accuracy (%) per present digit", "",
             "| Map " + header + " All |", rule]
    for kind in _kinds_in(results, "loc_acc"):
        lines.append(f"| {DISPLAY_NAMES.get(kind, kind)} | "
                     + " | ".join(_pct(get(f"{kind}/loc_acc/{c}")) for c in classes)
                     + f" | {_pct(get(f'{kind}/loc_acc'))} |")
    return "\n".join(lines) + "\n"


def write_results(results: Mapping[str, float], workdir: str | os.PathLike,
                  *, title: str | None = None) -> tuple[str, str]:
    """Writes ``results.json`` (fractions; NaN as null) and ``results.md`` (percent tables).

    Returns:
      the paths of the two files.
    """
    os.makedirs(workdir, exist_ok=True)
    json_path = os.path.join(workdir, "results.json")
    md_path = os.path.join(workdir, "results.md")
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v)
             for k, v in results.items()}
    with open(json_path, "w") as f:
        json.dump(clean, f, indent=2, sort_keys=True)
    with open(md_path, "w") as f:
        if title:
            f.write(f"# {title}\n\n")
        f.write(format_table(results))
    return json_path, md_path
