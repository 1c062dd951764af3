"""Argument checks shared by the core modules (cams, losses, metrics, boxes).

Shape and dtype checks run at trace time; value checks only when the values are concrete
(eager calls): under ``jit`` / ``vmap`` traced values cannot be inspected.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside ``jit`` / ``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


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
    if is_concrete(labels) and labels.size:
        values = np.asarray(labels)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}) ({classes_from}), got "
                             f"values in [{lo}, {hi}]")
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
    """Float score maps of ``rank`` (3: ``[B,H,W]``, 4: ``[B,L,H,W]``) in [0, 1] -> float32."""
    scoremaps = jnp.asarray(scoremaps)
    dims = "[B, H, W]" if rank == 3 else "[B, L, H, W]"
    if scoremaps.ndim != rank:
        raise ValueError(f"{name} must have shape {dims} (rank {rank}), got {scoremaps.shape}")
    if is_concrete(scoremaps) and scoremaps.size:
        values = np.asarray(scoremaps)
        if not np.all((values >= 0) & (values <= 1)):
            raise ValueError(
                f"{name} must lie in [0, 1] (see boxes.scoremaps), got values in "
                f"[{np.nanmin(values)}, {np.nanmax(values)}] (NaN present: "
                f"{bool(np.isnan(values).any())})")
    return scoremaps.astype(jnp.float32)


def check_boxes_valid(boxes, valid, name: str):
    """Concrete check of x0 <= x1, y0 <= y1 where ``valid`` (broadcastable to boxes[..., 0])."""
    if not (is_concrete(boxes) and is_concrete(valid)):
        return
    b = np.asarray(boxes)
    mask = np.broadcast_to(np.asarray(valid, bool), b.shape[:-1])
    bad = mask & ((b[..., 2] < b[..., 0]) | (b[..., 3] < b[..., 1]))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1, got {b[index].tolist()}"
            f" at index {index}")


def check_gt(gt_boxes, gt_valid, batch: int):
    """int ``[B,G,4]`` boxes with a bool ``[B,G]`` mask -> (int32 boxes, bool mask)."""
    gt_boxes = jnp.asarray(gt_boxes)
    gt_valid = jnp.asarray(gt_valid)
    if gt_boxes.ndim != 3 or gt_boxes.shape[0] != batch or gt_boxes.shape[2] != 4:
        raise ValueError(
            f"gt_boxes must have shape [B, G, 4] with B = {batch}, got shape {gt_boxes.shape}")
    if not jnp.issubdtype(gt_boxes.dtype, jnp.integer):
        raise ValueError(f"gt_boxes must be an integer array, got dtype {gt_boxes.dtype}")
    if gt_valid.shape != gt_boxes.shape[:2]:
        raise ValueError(
            f"gt_valid must have shape [B, G] = {gt_boxes.shape[:2]}, got shape {gt_valid.shape}")
    check_boxes_valid(gt_boxes, gt_valid, "gt_boxes")
    return gt_boxes.astype(jnp.int32), gt_valid.astype(bool)


def check_valid(valid, batch: int):
    """Optional bool ``[B]`` example mask (None: all True)."""
    if valid is None:
        return jnp.ones((batch,), bool)
    valid = jnp.asarray(valid)
    if valid.shape != (batch,):
        raise ValueError(f"valid must have shape [B] = ({batch},), got shape {valid.shape}")
    return valid.astype(bool)


def check_logits_labels(logits, labels):
    """float ``[B,M]`` logits and int ``[B]`` labels in ``[0, M)``."""
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, M] (rank 2), got shape {logits.shape}")
    labels = check_labels(labels, logits.shape[0], logits.shape[1],
                                  classes_from="M = logits.shape[1]")
    return logits, labels
