"""Argument checks shared by the core modules (cams, losses, metrics, boxes, evaluation).

Shape and dtype checks run at trace time; value checks only when the values are concrete
(eager calls, NumPy batches at the evaluation driver): under ``jit`` / ``vmap`` traced values
cannot be inspected, and each entry's docstring says what traced values then do.

One function per value rule, reused by every entry point; each raises a ``ValueError`` that
names the argument, the first offending index (C order) and the value there:

* :func:`check_label_values`: integer labels in ``[0, M)``;
* :func:`check_box_values`: boxes ``(x0, y0, x1, y1)`` with ``x0 <= x1``, ``y0 <= y1`` (finite)
  and, given the image size, inside it (``0 <= x < W``, ``0 <= y < H``), on the rows a
  validity mask marks real (the others are padding and are not checked);
* :func:`check_mask_values`: a validity mask is bool, or numbers that are all 0 or 1;
* :func:`check_unit_interval`: score maps are finite and in ``[0, 1]``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside ``jit`` / ``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


def first_index(bad: np.ndarray) -> tuple[int, ...]:
    """Index (C order) of the first True of the bool array ``bad``."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))


def _at(name: str, index: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(str(i) for i in index)}]"


def _item(values: np.ndarray, index: tuple[int, ...]):
    value = values[index]
    return value.tolist() if isinstance(value, np.ndarray) else value.item()


def check_label_values(labels, num_classes: int, *, name: str = "labels",
                       classes_from: str = "M", where=None) -> None:
    """Concrete integer labels (any shape) lie in ``[0, num_classes)``.

    Args:
      labels: concrete labels (NumPy, or a JAX array outside ``jit``); tracers are skipped.
      num_classes: ``M``.
      name: the argument's name in the message; classes_from: where ``M`` comes from.
      where: optional bool mask broadcastable to ``labels``: only these entries are checked
        (e.g. the real examples of a padded batch, or the valid GT boxes).

    Raises:
      ValueError: at the first label outside ``[0, M)``, e.g. ``labels must lie in [0, 5)
        (M = settings.num_classes), got labels[3] = 5``.
    """
    if not is_concrete(labels) or (where is not None and not is_concrete(where)):
        return
    values = np.asarray(labels)
    bad = (values < 0) | (values >= num_classes)
    if where is not None:
        bad &= np.broadcast_to(np.asarray(where, bool), bad.shape)
    if bad.any():
        i = first_index(bad)
        raise ValueError(f"{name} must lie in [0, {num_classes}) ({classes_from}), got "
                         f"{_at(name, i)} = {_item(values, i)}")


def check_mask_values(mask, name: str) -> None:
    """A concrete validity mask is bool, or numbers that are all exactly 0 or 1.

    Raises:
      ValueError: at the first other value, e.g. ``gt_valid must be a bool mask (0 or 1), got
        gt_valid[1, 0] = 2``. Tracers are skipped (they are cast with ``astype(bool)``).
    """
    if not is_concrete(mask):
        return
    values = np.asarray(mask)
    if values.dtype == bool:
        return
    bad = (values != 0) & (values != 1)
    if bad.any():
        i = first_index(bad)
        raise ValueError(f"{name} must be a bool mask (0 or 1), got {_at(name, i)} = "
                         f"{_item(values, i)}")


def check_box_values(boxes, where, name: str, image_hw: tuple[int, int] | None = None) -> None:
    """Concrete boxes ``[..., 4]`` ``(x0, y0, x1, y1)``: ``x0 <= x1``, ``y0 <= y1`` (finite),
    and with ``image_hw = (H, W)`` inside the image: ``0 <= x0``, ``x1 < W``, ``0 <= y0``,
    ``y1 < H`` (inclusive pixel coordinates).

    Args:
      boxes: concrete ``[..., 4]``; tracers are skipped.
      where: bool mask broadcastable to ``boxes[..., 0]`` (True: a real box); rows where it is
        False are padding and are not checked (the pipeline writes zeros there, and keeps the
        coordinates of boxes that the crop removed).
      name: the argument's name in the message.
      image_hw: optional ``(H, W)``.

    Raises:
      ValueError: at the first offending real box, e.g. ``gt_boxes must satisfy x0 <= x1 and
        y0 <= y1, got gt_boxes[1, 0] = [4, 1, 1, 4]``.
    """
    if not (is_concrete(boxes) and is_concrete(where)):
        return
    b = np.asarray(boxes)
    mask = np.broadcast_to(np.asarray(where, bool), b.shape[:-1])
    x0, y0, x1, y1 = (b[..., k] for k in range(4))
    bad = mask & ~((x0 <= x1) & (y0 <= y1))   # NaN compares False: not a box
    rule = "x0 <= x1 and y0 <= y1"
    if not bad.any() and image_hw is not None:
        h, w = image_hw
        bad = mask & ((x0 < 0) | (y0 < 0) | (x1 > w - 1) | (y1 > h - 1))
        rule = (f"0 <= x0 <= x1 < W = {w} and 0 <= y0 <= y1 < H = {h} (inside the "
                f"{h} x {w} image)")
    if bad.any():
        i = first_index(bad)
        raise ValueError(f"{name} must satisfy {rule}, got {_at(name, i)} = {b[i].tolist()}")


def unit_interval_error(values: np.ndarray, name: str) -> ValueError:
    """The error of :func:`check_unit_interval` for NumPy ``values`` that fail it."""
    bad = ~((values >= 0) & (values <= 1))
    i = first_index(bad)
    finite = values[np.isfinite(values)]
    span = f"[{finite.min()}, {finite.max()}]" if finite.size else "(none finite)"
    return ValueError(
        f"{name} must lie in [0, 1] and be finite (see boxes.scoremaps / boxes.normalize), got "
        f"{_at(name, i)} = {_item(values, i)} (finite values in {span}, NaN present: "
        f"{bool(np.isnan(values).any())})")


def check_unit_interval(values, name: str) -> None:
    """Concrete values are finite and in ``[0, 1]`` (two reductions on the passing path).

    Raises:
      ValueError: at the first value outside ``[0, 1]`` or NaN (:func:`unit_interval_error`).
        Tracers are skipped.
    """
    if not is_concrete(values):
        return
    values = np.asarray(values)
    # A NaN makes the minimum NaN and fails the test.
    if values.size and not (values.min() >= 0 and values.max() <= 1):
        raise unit_interval_error(values, name)


def check_labels(labels, batch: int, num_classes: int, *, name: str = "labels",
                 classes_from: str = "M"):
    """Checks int ``labels [B]`` with values in ``[0, num_classes)``; returns an int32 array.

    Args:
      labels: the array to check.
      batch: the expected ``B``.
      num_classes: ``M``; values are checked only when concrete.
      name: the argument's name in error messages.
      classes_from: where ``M`` comes from, for error messages.

    Raises:
      ValueError: wrong shape or dtype, or (concrete only) a value outside ``[0, M)``.
    """
    labels = jnp.asarray(labels)
    if labels.shape != (batch,):
        raise ValueError(f"{name} must have shape [B] = ({batch},), got shape {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {labels.dtype}")
    check_label_values(labels, num_classes, name=name, classes_from=classes_from)
    return labels.astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# Metric arguments (metrics, multilabel_metrics)
# --------------------------------------------------------------------------------------------
def concrete_list(values, name: str, dims: str = "") -> np.ndarray:
    """Concrete values (a scalar or a 1-D list) -> float64 ``[N]``, ``N >= 1``.

    Raises:
      ValueError: traced values, or not a non-empty 1-D list (``dims``, e.g. " [T]", is put
        after "list" in the message).
    """
    if isinstance(values, jax.core.Tracer):
        raise ValueError(f"{name} must be concrete (Python/NumPy) values, not traced")
    values = np.atleast_1d(np.asarray(values, np.float64))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list{dims}, got shape {values.shape}")
    return values


def check_thresholds(thresholds, name: str = "thresholds") -> tuple:
    """Concrete thresholds ``[T]`` in [0, 1] -> tuple of floats (hashable, static)."""
    values = concrete_list(thresholds, name, " [T]")
    if not np.all((values >= 0) & (values <= 1)):
        raise ValueError(
            f"{name} must lie in [0, 1], got values in [{np.nanmin(values)}, "
            f"{np.nanmax(values)}]")
    return tuple(float(v) for v in values)


def check_scoremaps(scoremaps, name: str = "scoremaps", rank: int = 3):
    """Float score maps of ``rank`` (3: ``[B,H,W]``, 4: ``[B,L,H,W]``) -> float32.

    Concrete maps must be finite and in [0, 1] (:func:`check_unit_interval`); traced maps are
    not checked (the box extraction then clips them, see ``boxes.extract``).
    """
    scoremaps = jnp.asarray(scoremaps)
    dims = "[B, H, W]" if rank == 3 else "[B, L, H, W]"
    if scoremaps.ndim != rank:
        raise ValueError(f"{name} must have shape {dims} (rank {rank}), got {scoremaps.shape}")
    check_unit_interval(scoremaps, name)
    return scoremaps.astype(jnp.float32)


def check_gt(gt_boxes, gt_valid, batch: int, image_hw: tuple[int, int] | None = None, *,
             valid_name: str = "gt_valid"):
    """int ``[B,G,4]`` boxes with a bool ``[B,G]`` mask -> (int32 boxes, bool mask).

    Concrete values: the mask is 0/1 (:func:`check_mask_values`) and every valid box is
    ordered and, given ``image_hw = (H, W)``, inside the image (:func:`check_box_values`);
    rows whose mask is False are padding and not checked. Traced values are not checked.
    """
    gt_boxes = jnp.asarray(gt_boxes)
    gt_valid = jnp.asarray(gt_valid)
    if gt_boxes.ndim != 3 or gt_boxes.shape[0] != batch or gt_boxes.shape[2] != 4:
        raise ValueError(
            f"gt_boxes must have shape [B, G, 4] with B = {batch}, got shape {gt_boxes.shape}")
    if not jnp.issubdtype(gt_boxes.dtype, jnp.integer):
        raise ValueError(f"gt_boxes must be an integer array, got dtype {gt_boxes.dtype}")
    if gt_valid.shape != gt_boxes.shape[:2]:
        raise ValueError(f"{valid_name} must have shape [B, G] = {gt_boxes.shape[:2]}, got "
                         f"shape {gt_valid.shape}")
    check_mask_values(gt_valid, valid_name)
    check_box_values(gt_boxes, gt_valid, "gt_boxes", image_hw)
    return gt_boxes.astype(jnp.int32), gt_valid.astype(bool)


def check_images(images, name: str = "images"):
    """float ``[B, H, W, C]`` (rank 4), returned as float32."""
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape [B, H, W, C] (rank 4), got {images.shape}")
    return images.astype(jnp.float32)


def check_maps_like(maps, images, name: str):
    """``maps`` of shape ``[B, H, W]`` = the images' (``images [B, H, W, C]``)."""
    maps = jnp.asarray(maps)
    if maps.shape != images.shape[:3]:
        raise ValueError(f"{name} must have shape [B, H, W] = {images.shape[:3]} (the images'), "
                         f"got {maps.shape}")
    return maps


def check_valid(valid, batch: int):
    """Optional bool ``[B]`` example mask (None: all True); concrete values must be 0/1."""
    if valid is None:
        return jnp.ones((batch,), bool)
    valid = jnp.asarray(valid)
    if valid.shape != (batch,):
        raise ValueError(f"valid must have shape [B] = ({batch},), got shape {valid.shape}")
    check_mask_values(valid, "valid")
    return valid.astype(bool)


def check_logits_labels(logits, labels):
    """float ``[B,M]`` logits and int ``[B]`` labels in ``[0, M)``."""
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, M] (rank 2), got shape {logits.shape}")
    labels = check_labels(labels, logits.shape[0], logits.shape[1],
                                  classes_from="M = logits.shape[1]")
    return logits, labels
