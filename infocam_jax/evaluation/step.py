"""The one builder of the eval step: forward -> CAM-family and post-hoc maps -> boxes -> counts.

One compiled step per batch does everything on device: the model's forward pass, the maps of the
requested kinds (post-hoc ones by their own gradient / forward passes), upsampling and
normalisation (``settings.normalize``), box extraction at the fixed threshold and over the whole
threshold grid, the faithfulness metrics' forward passes (``settings.faithfulness``), and the
update of the counters. The
counters stay on device across batches; the host sums them once at the end, over devices and
processes (``devices.sum_devices``). Padded examples (``batch["valid"] == False``) add nothing.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from infocam_jax import _checks
from infocam_jax.evaluation import backends, multi_label, single_label
from infocam_jax.evaluation.settings import EvalSettings


def _evaluator(settings: EvalSettings):
    return multi_label if settings.multi_label else single_label


def init_counts(settings: EvalSettings) -> dict[str, Any]:
    """Zero counters of one device (``single_label.init_counts`` / ``multi_label.init_counts``)."""
    return _evaluator(settings).init_counts(settings)


def finalize(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, float]:
    """Summed counters -> flat results dict of floats in [0, 1] (NaN when nothing counted)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _evaluator(settings).finalize(settings, counts)


def curves(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Accuracy-versus-threshold curves of the summed counters (see the evaluators)."""
    return _evaluator(settings).curves(settings, counts)


def check_batch(batch: Mapping[str, Any], settings: EvalSettings,
                required_keys: tuple[str, ...] | None = None) -> None:
    """Checks one per-process host batch (docs/interfaces.md) before it goes to the device.

    The eval step is traced, so it cannot look at values: out-of-range labels would gather a
    clamped class map and score it, reversed boxes would give meaningless IoUs, silently. This
    host check (a few vectorised NumPy ops on the small arrays, the image's shape only: about
    0.25 ms for a batch of 256) is where they are caught.

    Checked, with ``M = settings.num_classes`` (the eval step checks that the model has M
    classes) and ``(H, W) = settings.image_size``:

    * the keys ``required_keys`` are present (default: the evaluator's ``REQUIRED_KEYS``; the
      PxAP evaluator passes its own: ``image``, ``label``, ``mask``, ``ignore``, ``valid``);
      only those keys are checked;
    * shapes: ``image [b, H, W, C]`` (the maps are upsampled to ``(H, W)`` and the boxes and
      masks are in those coordinates), ``label [b]``, ``boxes [b, G, 4]``, ``box_valid
      [b, G]``, ``valid [b]``, ``mask`` and ``ignore [b, H, W]``; multi-label also ``labels
      [b, M]`` and ``box_labels [b, G]``; ``label``, ``boxes`` and ``box_labels`` integer;
    * values: ``valid`` and ``box_valid`` are 0/1; on real examples (``valid`` True) ``label``
      is in ``[0, M)``, ``mask`` and ``ignore`` are 0/1, multi-hot ``labels`` are 0/1, and
      every real box (``box_valid`` True) has ``0 <= x0 <= x1 < W``, ``0 <= y0 <= y1 < H``
      and (multi-label) its label in ``[0, M)``. Padding is not checked: examples with
      ``valid`` False (the pipeline and ``devices.pad_to`` fill them with zeros) and box rows
      with ``box_valid`` False (zeros, or the coordinates of a box the crop removed;
      multi-label box labels -1) count nothing.

    Raises:
      ValueError: naming the key, the first offending index and its value, e.g.
        ``batch['label'] must lie in [0, 5) (M = settings.num_classes), got batch['label'][3]
        = 5``; or the expected and received shape, e.g. ``batch['image'] (the images
        [B, H, W, C]) must have (H, W) = settings.image_size = (16, 16), got shape
        (8, 4, 4, 6)``.
    """
    keys = tuple(required_keys or _evaluator(settings).REQUIRED_KEYS)
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"batch is missing keys {missing} (see docs/interfaces.md)")
    arrays = {k: np.asarray(batch[k]) for k in keys if k != "image"}
    _check_batch_shapes(np.shape(batch["image"]), arrays, settings)
    _check_batch_values(arrays, settings)


def _check_batch_shapes(image_shape, arrays: Mapping[str, np.ndarray],
                        settings: EvalSettings) -> None:
    """Shapes and integer dtypes of :func:`check_batch` (None: any size)."""
    b = arrays["valid"].shape[0] if arrays["valid"].ndim == 1 else None
    g = arrays["boxes"].shape[1] if "boxes" in arrays and arrays["boxes"].ndim == 3 else None
    hw = tuple(int(n) for n in settings.image_size)
    expected = {"image": (b, None, None, None), "label": (b,), "boxes": (b, g, 4),
                "box_valid": (b, g), "valid": (b,), "labels": (b, settings.num_classes),
                "box_labels": (b, g), "mask": (b, *hw), "ignore": (b, *hw)}
    shapes = {"image": tuple(image_shape), **{k: v.shape for k, v in arrays.items()}}
    for key, shape in shapes.items():
        want = expected[key]
        if len(shape) != len(want) or any(e is not None and e != n for e, n in zip(want, shape)):
            dims = ", ".join("?" if e is None else str(e) for e in want)
            raise ValueError(f"batch[{key!r}] must have shape [{dims}] (docs/interfaces.md; "
                             f"M = settings.num_classes, (H, W) = settings.image_size), got "
                             f"{shape}")
    if tuple(image_shape[1:3]) != hw:
        raise ValueError(f"batch['image'] (the images [B, H, W, C]) must have (H, W) = "
                         f"settings.image_size = {hw}, got shape {tuple(image_shape)}")
    for key in ("label", "boxes", "box_labels"):
        if key in arrays and not np.issubdtype(arrays[key].dtype, np.integer):
            raise ValueError(f"batch[{key!r}] must be an integer array, got dtype "
                             f"{arrays[key].dtype}")


def _check_batch_values(arrays: Mapping[str, np.ndarray], settings: EvalSettings) -> None:
    """Values of :func:`check_batch`, on the real examples and boxes only."""
    for key in ("valid", "box_valid"):
        if key in arrays:
            _checks.check_mask_values(arrays[key], f"batch[{key!r}]")
    real = arrays["valid"].astype(bool)
    m, classes_from = settings.num_classes, "M = settings.num_classes"
    _checks.check_label_values(arrays["label"], m, name="batch['label']",
                               classes_from=classes_from, where=real)
    for key in ("mask", "ignore"):
        if key in arrays:
            _checks.check_mask_values(np.where(real[:, None, None], arrays[key], 0),
                                      f"batch[{key!r}]")
    if "boxes" not in arrays:
        return
    real_boxes = arrays["box_valid"].astype(bool) & real[:, None]
    _checks.check_box_values(arrays["boxes"], real_boxes, "batch['boxes']",
                             tuple(settings.image_size))
    if settings.multi_label:
        _checks.check_mask_values(np.where(real[:, None], arrays["labels"], 0),
                                  "batch['labels']")
        _checks.check_label_values(arrays["box_labels"], m, name="batch['box_labels']",
                                   classes_from=classes_from, where=real_boxes)


def eval_step(settings: EvalSettings, model, kernel_fn, variables, batch, counts):
    """Per-device eval step: adds one (per-device) batch to the counters.

    Knows nothing about its parallel wrapper (no collectives), so ``jax.pmap``, ``jax.jit``
    or ``jax.shard_map`` can run it unchanged.

    Args:
      settings: static evaluation settings.
      model: Flax module: any ``infocam_jax.models`` network (ACoL / SPG are applied with
        ``labels=batch["label"]``, the ground truth, and their maps fuse their branches:
        ``backends.forward_readout``), or one with ``apply(variables, images, train=False) ->
        (logits [B,M], features [B,h,w,K])``.
      kernel_fn: ``variables -> [K,M]`` (``(logits, features)`` models only).
      variables: model variables.
      batch: dict of docs/interfaces.md (``image`` ``[B,H,W,C]``, ``label`` ``[B]``,
        ``boxes`` ``[B,G,4]``, ``box_valid`` ``[B,G]``, ``valid`` ``[B]``, multi-label also
        ``labels`` ``[B,M]`` and ``box_labels`` ``[B,G]``). Traced: its values are not checked
        here (the driver checks each host batch with :func:`check_batch` first); the model's
        class count must equal ``settings.num_classes`` (checked at trace time).
      counts: counters as made by :func:`init_counts`.

    Returns:
      the updated counters (same structure).
    """
    backends.check_model_settings(settings, model)
    logits, readout = backends.forward_readout(model, variables, batch["image"],
                                               batch["label"].astype("int32"),
                                               kernel_fn=kernel_fn)
    if logits.shape[-1] != settings.num_classes:  # shapes are static: checked at trace time
        raise ValueError(f"the model has {logits.shape[-1]} classes (logits [B, M]) but "
                         f"settings.num_classes = {settings.num_classes}")
    features, kernel = readout.branches[0].features, readout.branches[0].kernel
    valid = batch["valid"].astype(bool)
    extra = {} if settings.multi_label else {"readout": readout}
    return _evaluator(settings).update(settings, logits, features, kernel, batch, valid, counts,
                                       network=(model, variables), **extra)


def make_eval_step(settings: EvalSettings, model, *, num_devices: int,
                   kernel_fn: Callable[[Any], jax.Array] | None = None):
    """``jax.pmap`` of :func:`eval_step` over ``num_devices`` (axis ``"batch"``), cached.

    The same (settings, model, device count, kernel function) returns the same compiled step,
    so evaluating several splits, checkpoints, seeds or heads of one architecture compiles once
    (settings, Flax modules and kernel functions are hashable).

    Returns:
      ``f(replicated_variables, sharded_batch, sharded_counts) -> sharded_counts``; every
      input and output has a leading device axis; the counters' buffers are donated.
    """
    return _make_eval_step(settings, model, int(num_devices),
                           kernel_fn or backends.default_kernel_fn())


@functools.lru_cache(maxsize=32)
def _make_eval_step(settings, model, num_devices, kernel_fn):
    step = functools.partial(eval_step, settings, model, kernel_fn)
    return jax.pmap(step, axis_name="batch", devices=jax.local_devices()[:num_devices],
                    donate_argnums=(2,))
