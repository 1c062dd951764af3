"""Metrics as mergeable streaming count pytrees (summable across batches and devices).

``localization``: IoU, top-k, GT-known / Top-1 Loc, MaxBoxAcc(V2) (its names are re-exported
here: ``metrics.max_box_accuracy``, ...); ``multilabel``: per-digit classification and
localisation; ``pxap``: PxAP pixel histograms; ``faithfulness``: average drop / increase in
confidence, ROAD and complexity; ``deletion_insertion``: RISE's deletion / insertion AUC;
``arcc``: coherency and ARCC.
"""
from infocam_jax.metrics.localization import (DEFAULT_THRESHOLDS, V2_IOU_THRESHOLDS,
                                              BoxAccuracyCounts, LocalizationCounts,
                                              box_accuracy_counts, gt_known_loc_correct, iou,
                                              localization_counts, max_box_accuracy,
                                              max_box_accuracy_v2, top1_loc_correct, topk_correct)

__all__ = ["DEFAULT_THRESHOLDS", "V2_IOU_THRESHOLDS", "BoxAccuracyCounts", "LocalizationCounts",
           "box_accuracy_counts", "gt_known_loc_correct", "iou", "localization_counts",
           "max_box_accuracy", "max_box_accuracy_v2", "top1_loc_correct", "topk_correct"]
