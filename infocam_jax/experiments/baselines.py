"""Input-blind reference boxes: what localisation accuracy a box that ignores the image gets.

* random box: for every valid ground-truth box, a box with ``x0 <= x1`` drawn as two independent
  uniform integer columns in ``[0, W-1]`` (sorted) and likewise for the rows; a hit when its
  IoU with that ground-truth box is >= ``iou_threshold``; averaged over ``draws`` draws;
* full-image box ``(0, 0, W-1, H-1)``;
* half-canvas box (two-slot double-digit canvases only): the half of the canvas that holds the
  digit, i.e. what a model that only knows on which side the digit is would output.

IoU is ``metrics.iou`` (inclusive pixels, clamped intersection), the one used for every model.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from infocam_jax import metrics


def _iou(a, b) -> np.ndarray:
    return np.asarray(metrics.iou(np.asarray(a, np.int32), np.asarray(b, np.int32)))


def random_boxes(rng: np.random.Generator, shape: tuple[int, ...], height: int, width: int
                 ) -> np.ndarray:
    """Uniformly random inclusive boxes: int64 ``shape + (4,)`` with ``x0 <= x1``, ``y0 <= y1``."""
    xs = np.sort(rng.integers(0, width, size=shape + (2,)), axis=-1)
    ys = np.sort(rng.integers(0, height, size=shape + (2,)), axis=-1)
    return np.stack([xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]], axis=-1)


def baseline_accuracies(gt_boxes: np.ndarray, image_size: tuple[int, int], *,
                        iou_threshold: float = 0.5, draws: int = 10, seed: int = 0,
                        half_canvas: bool = False) -> dict[str, float]:
    """Localisation accuracy of input-blind boxes against every ground-truth box.

    Args:
      gt_boxes: int ``[N, 4]`` valid ground-truth boxes ``(x0, y0, x1, y1)``, inclusive.
      image_size: ``(H, W)``.
      iou_threshold: IoU needed for a hit.
      draws: random boxes per ground-truth box (the accuracy is their mean).
      seed: random seed.
      half_canvas: also score the half of a two-slot canvas (left/right) holding the box.

    Returns:
      ``{"random_box": f, "full_image_box": f[, "half_canvas_box": f]}``, fractions in [0, 1].
    """
    gt = np.asarray(gt_boxes, np.int64)
    if gt.ndim != 2 or gt.shape[1] != 4 or gt.shape[0] == 0:
        raise ValueError(f"gt_boxes must have shape [N, 4] with N >= 1, got {gt.shape}")
    h, w = (int(s) for s in image_size)
    rng = np.random.default_rng(seed)
    rand = random_boxes(rng, (draws, gt.shape[0]), h, w)
    out = {"random_box": float(np.mean(_iou(rand, gt[None]) >= iou_threshold)),
           "full_image_box": float(np.mean(
               _iou(np.array([0, 0, w - 1, h - 1]), gt) >= iou_threshold))}
    if half_canvas:
        half = w // 2
        right = (gt[:, 0] + gt[:, 2]) / 2.0 >= half
        box = np.where(right[:, None], [half, 0, w - 1, h - 1], [0, 0, half - 1, h - 1])
        out["half_canvas_box"] = float(np.mean(_iou(box, gt) >= iou_threshold))
    return out


def split_gt_boxes(batches: Iterable[Mapping[str, np.ndarray]]) -> np.ndarray:
    """Valid ground-truth boxes of real (non-padding) examples: int ``[N, 4]``."""
    out = []
    for b in batches:
        keep = np.asarray(b["box_valid"], bool) & np.asarray(b["valid"], bool)[:, None]
        out.append(np.asarray(b["boxes"])[keep])
    return np.concatenate(out).astype(np.int64)
