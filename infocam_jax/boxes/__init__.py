"""Score maps to boxes, following the WSOL evaluation protocol of Choe et al. (CVPR 2020).

``extract``: upsampling, normalisation, thresholds and boxes (jittable); ``components``: the
pure-JAX component-tree pass. The compiled kernel and its loaders live in
:mod:`infocam_jax.native`. The public names are re-exported here::

    boxes.scoremaps(maps, size, method="bicubic", normalize="minmax")   # [B,h,w] -> [B,H,W]
    boxes.largest_box(scoremaps, thresholds, backend="auto")            # -> [B,T,4] int32
    boxes.max_contour_iou(scoremaps, thresholds, gt_boxes, gt_valid, multi_contour=False)
"""
from infocam_jax.boxes.extract import (BACKENDS, NORMALIZE_MODES, largest_box, level_table,
                                       max_contour_iou, normalize, resolve_backend, scoremaps,
                                       upsample)

__all__ = ["BACKENDS", "NORMALIZE_MODES", "largest_box", "level_table", "max_contour_iou",
           "normalize", "resolve_backend", "scoremaps", "upsample"]
