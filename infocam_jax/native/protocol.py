"""Pieces of the box protocol shared by the jitted eval path and the JAX-free score-map tool.

* :func:`level_table`: the foreground level ``int(t * max(q))`` of every threshold and map
  maximum (NumPy, float64, as the protocol computes it).
* :func:`max_iou_with_gt`: the inclusive-pixel IoU of boxes with an image's GT boxes, one
  statement for NumPy and jax.numpy (``xp=``; only functions both share), so
  :mod:`infocam_jax.boxes.components` (jitted) and :mod:`infocam_jax.evaluation.scoremaps.score`
  (host) give the same float32 numbers.

Imports no JAX.
"""
from __future__ import annotations

import numpy as np


def level_table(thresholds: np.ndarray) -> np.ndarray:
    """int32 ``[T, 256]``: ``int(t * m)`` for each threshold t and map maximum m = 0..255.

    Computed in float64 exactly as the protocol's ``int(threshold * np.max(uint8_map))``;
    ``thresholds`` float64 ``[T]`` in [0, 1] (checked by :func:`infocam_jax.boxes.extract.level_table`).
    """
    t = np.asarray(thresholds, np.float64)
    return np.floor(t[:, None] * np.arange(256, dtype=np.float64)[None, :]).astype(np.int32)


def max_iou_with_gt(boxes, gt_boxes, gt_valid, xp=np):
    """Best IoU of each box over the image's valid GT boxes.

    ``I = max(min(x1, X1) - max(x0, X0) + 1, 0) · max(min(y1, Y1) - max(y0, Y0) + 1, 0)``,
    ``IoU = I / (area + area_gt - I)`` in float32 (areas of inclusive boxes, ``(x1-x0+1)(y1-y0+1)``),
    0 where a GT slot is not valid.

    Args:
      boxes: int32 ``[B, T, 4]`` (x0, y0, x1, y1).
      gt_boxes: int32 ``[B, G, 4]``.
      gt_valid: bool ``[B, G]``.
      xp: ``numpy`` or ``jax.numpy``.

    Returns:
      float32 ``[B, T]``.
    """
    a = boxes[:, :, None, :]
    b = gt_boxes[:, None, :, :]
    iw = xp.maximum(0, xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]) + 1)
    ih = xp.maximum(0, xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    iou = inter.astype(xp.float32) / (area_a + area_b - inter).astype(xp.float32)
    return xp.max(xp.where(gt_valid[:, None, :], iou, xp.float32(0)), axis=2)
