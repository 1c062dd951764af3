"""The JAX engine of the score-map tool (:mod:`infocam_jax.evaluation.scoremaps.score`).

Box datasets with ``engine="jax"``: one jitted step per batch (the native FFI kernel or the
pure-JAX component pass of :mod:`infocam_jax.boxes.extract`) sums the hits on the device. Mask
datasets: the PxAP histograms of :mod:`infocam_jax.metrics.pxap`. ``score`` imports this module
only when one of those is chosen, so that its host engine never imports JAX.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax.boxes import components, extract
from infocam_jax.metrics import pxap
from infocam_jax.native import ffi

__all__ = ["box_counts", "box_step", "pixel_counts", "pxap_percent", "score_bins"]


def box_counts(num_classes: int, num_ious: int, table: np.ndarray, deltas: np.ndarray):
    """The step's starting state on the device: (total int32 ``[I, T]``, per_class int32
    ``[C, I, T]``, the level table, the IoU thresholds)."""
    t = table.shape[0]
    return (jnp.zeros((num_ious, t), jnp.int32), jnp.zeros((num_classes, num_ious, t), jnp.int32),
            jnp.asarray(table), jnp.asarray(deltas))


@functools.lru_cache(maxsize=8)
def box_step(multi_contour: bool):
    """The jitted step ``(total [I, T], per_class [C, I, T], q uint8 [B, H, W], level table,
    gt [B, G, 4], gt_valid [B, G], labels [B], valid [B], deltas float32 [I]) -> (total,
    per_class)``: adds the hits ``best IoU >= δ`` of the valid rows."""
    native = extract.resolve_backend("auto") == "native"

    def best_iou(q, table, gt, gt_valid):                                 # [B, T]
        if not native:  # the XLA pass on bin-centre maps, which quantise back to q
            s = jnp.where(q == 255, 1.0, (q.astype(jnp.float32) + 0.5) / 255)
            if multi_contour:
                return extract._multi_iou(s, table, gt, gt_valid)  # noqa: SLF001
            return components.iou_with_gt(extract._largest_box(s, table), gt,  # noqa: SLF001
                                          gt_valid)
        levels = extract._levels(q, table)                                # noqa: SLF001
        if multi_contour:
            return jnp.take_along_axis(ffi.contour_iou(q, gt, gt_valid), levels, axis=1)
        per_level = ffi.largest_boxes(q)
        boxes = jnp.take_along_axis(per_level, levels[..., None], axis=1)
        return components.iou_with_gt(boxes, gt, gt_valid)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(total, per_class, q, table, gt, gt_valid, labels, valid, deltas):
        best = best_iou(q, table, gt, gt_valid)
        hit = (best[:, None, :] >= deltas[None, :, None]) & valid[:, None, None]   # [B, I, T]
        hit = hit.astype(jnp.int32)
        return (total + jnp.sum(hit, axis=0),
                per_class + jax.ops.segment_sum(hit, labels, num_segments=per_class.shape[0]))

    return step


def score_bins(scoremap: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The PxAP bin of every score of one map: int16 ``[H, W]`` (on the host)."""
    return pxap.host_score_bins(scoremap, thresholds)


def pixel_counts(bins, foreground, ignore, thresholds, valid) -> tuple:
    """PxAP histograms of one padded batch: int64 (positive ``[K]``, negative ``[K]``)."""
    counts = pxap.pixel_counts_from_bins(bins, foreground, ignore, thresholds, valid)
    return np.asarray(counts.positive, np.int64), np.asarray(counts.negative, np.int64)


def pxap_percent(positive, negative) -> float:
    """PxAP of the summed histograms, in percent."""
    return pxap.average_precision(positive, negative) * 100
