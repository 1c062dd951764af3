"""Multi-label evaluator (double-digit MNIST): per-digit classification, localisation of every
present digit at the fixed threshold, and the localisation-versus-threshold curve.

Results (fractions in [0, 1]; M classes; ``K`` a map kind, "cam" or "infocam")::

  num_images, digit_acc/m (per-class accuracy of ``logit > 0`` vs the multi-hot target),
  cls_acc (mean of digit_acc), exact_match (every class right), accuracy (= cls_acc),
  K/loc_acc           over all (image, present digit) pairs: the box of that digit's map at
                      cam_threshold has IoU >= iou_threshold with that digit's box
  K/loc_acc/m         the same per digit class (NaN when the class never occurs)

Curves (:func:`curves`, with ``settings.box_accuracy``): ``K/loc_acc`` at every grid threshold,
overall and per digit. One largest-box pass per map serves the fixed threshold and the grid.
Definitions: ``infocam_jax.metrics.multilabel``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax.metrics import multilabel as mlm
from infocam_jax.evaluation import backends, forward
from infocam_jax.evaluation.kind_counts import kind_slice, per_kind_curves
from infocam_jax.evaluation.settings import EvalSettings

REQUIRED_KEYS = ("image", "label", "boxes", "box_valid", "valid", "labels", "box_labels")


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def init_counts(settings: EvalSettings) -> dict[str, Any]:
    """Zero counters for one device: the kind-independent exact-match count, and per map kind
    (leading axis) a ``MultiLabelCounts`` and, with ``box_accuracy``, a ``LocCurveCounts``."""
    n = len(settings.map_kinds)
    ml = mlm.MultiLabelCounts.empty(settings.num_classes, settings.cam_threshold,
                                    settings.iou_threshold)
    counts = {"exact": jnp.zeros((), jnp.int32), "ml": _stack([ml] * n)}
    if settings.box_accuracy:
        curve = mlm.LocCurveCounts.empty(settings.num_classes, settings.box_thresholds,
                                         settings.iou_threshold)
        counts["curve"] = _stack([curve] * n)
    return counts


def update(settings: EvalSettings, logits, features, kernel, batch, valid, counts, *,
           network=None):
    """Adds one per-device batch to ``counts`` (traced inside the eval step; ``network``, the
    ``(model, variables)`` pair, is unused: multi-label maps are CAM-family only)."""
    targets = batch["labels"]                                              # [B, M]
    gt_boxes = batch["boxes"].astype(jnp.int32)                            # [B, G, 4]
    box_labels = batch["box_labels"].astype(jnp.int32)                     # [B, G]
    box_valid = batch["box_valid"].astype(bool)
    g = box_labels.shape[1]
    # One slot per present label (at most G per image), matched to that label's box(es).
    slot_labels, slot_valid = mlm.present_label_slots(targets, min(g, settings.num_classes))
    exact = jnp.all(mlm.multilabel_cls_correct(logits, targets), axis=-1) & valid
    maps = jnp.stack([forward.multilabel_class_maps(k, features, kernel, slot_labels,
                                                    region_size=settings.region_size)
                      for k in settings.map_kinds])                        # [kinds, B, L, h, w]
    sm = forward.stacked_scoremaps(settings, maps)
    thresholds = [settings.cam_threshold]
    if settings.box_accuracy:
        thresholds += list(settings.box_thresholds)
    cls = mlm.multilabel_cls_correct(logits, targets)
    counted = slot_valid & valid[:, None]

    def per_kind(ml, curve, sm):
        best = mlm.slot_max_iou(sm, slot_labels, gt_boxes, box_labels, box_valid,
                                np.asarray(thresholds), **backends.box_options(settings))
        ml = ml.merge(mlm.counts_from_slots(cls, valid, best[..., 0] >= ml.iou_threshold,
                                            slot_labels, slot_valid, ml.cam_threshold,
                                            ml.iou_threshold))
        if curve is not None:
            curve = curve.add(best[..., 1:], slot_labels, counted)
        return ml, curve

    out = {"exact": counts["exact"] + jnp.sum(exact, dtype=jnp.int32)}
    if settings.box_accuracy:
        out["ml"], out["curve"] = jax.vmap(per_kind)(counts["ml"], counts["curve"], sm)
    else:
        out["ml"] = jax.vmap(lambda ml, sm: per_kind(ml, None, sm)[0])(counts["ml"], sm)
    return out


def _float(x) -> float:
    return float(np.asarray(x))


def finalize(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, float]:
    """Summed counters -> the flat results dict of the module docstring."""
    res: dict[str, float] = {}
    first = kind_slice(counts["ml"], 0)
    n = int(first.count)
    res["num_images"] = float(n)
    cls = first.result()
    for c in range(settings.num_classes):
        res[f"digit_acc/{c}"] = _float(cls["cls_acc"][c])
    res["cls_acc"] = _float(cls["mean_cls_acc"])
    res["exact_match"] = int(counts["exact"]) / n if n else float("nan")
    res["accuracy"] = res["cls_acc"]
    for i, kind in enumerate(settings.map_kinds):
        r = kind_slice(counts["ml"], i).result()
        res[f"{kind}/loc_acc"] = _float(r["loc_acc_all"])
        for c in range(settings.num_classes):
            res[f"{kind}/loc_acc/{c}"] = _float(r["loc_acc"][c])
    return res


def curves(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Localisation-versus-threshold curves over ``settings.box_thresholds``: ``{kind:
    {"loc_acc": float64 [T] over all (image, present digit) pairs, "loc_acc_per_class":
    float64 [M, T]}}`` (NaN where nothing was counted).

    Raises:
      ValueError: without ``settings.box_accuracy`` (no grid was counted).
    """
    def curve(i):
        c = kind_slice(counts["curve"], i)
        correct = np.asarray(c.correct, np.float64)
        count = np.asarray(c.count, np.float64)
        return {"loc_acc": correct.sum(0) / count.sum(),
                "loc_acc_per_class": correct / count[:, None]}

    return per_kind_curves(settings, counts, "curve", curve)
