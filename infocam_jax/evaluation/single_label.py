"""Single-label evaluator: classification, GT-known / Top-1 Loc, MaxBoxAcc(V2), and the
GT-known / Top-1 Loc accuracy-versus-threshold curves.

Results (fractions in [0, 1]; ``K`` is a map kind such as ``cam``)::

  num_images, top1_cls, top5_cls, accuracy (= top1_cls, the model-selection metric),
  K/gt_known_loc      box of the GT-class map at ``cam_threshold`` has IoU >= iou_threshold
  K/top1_loc          gt_known_loc and the top-1 class is right
  K/max_box_acc       MaxBoxAcc: largest box, IoU >= iou_threshold, best score threshold
  K/max_box_acc_threshold   the score threshold reaching it
  K/max_box_acc_v2    MaxBoxAccV2: every contour's box, mean over IoU 0.3 / 0.5 / 0.7
  K/max_box_acc_v2_iou30, _iou50, _iou70
  (the max_box_acc keys only with ``settings.box_accuracy``)
  with ``settings.faithfulness``: each metric's results per kind (average drop / increase
  in confidence, ROAD, deletion / insertion AUC, complexity, coherency / ARCC), listed in
  ``evaluation.faithfulness_counts``; the maps are the score maps above, the explained class
  is the ground truth

Curves (:func:`curves`, with ``box_accuracy``): per kind, GT-known Loc and Top-1 Loc at every
grid threshold. GT-known Loc at grid threshold t *is* BoxAcc(t) of MaxBoxAcc.

Top-1 Loc uses the GT-class map: when the top-1 class is right, the predicted-class map *is*
the GT-class map, and when it is wrong Top-1 Loc fails whatever the box, so computing boxes for
the predicted class as well would double the box work for the same number.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import boxes, metrics
from infocam_jax.evaluation import backends, faithfulness_counts, forward
from infocam_jax.evaluation.kind_counts import kind_slice, per_kind_curves
from infocam_jax.evaluation.settings import V2_IOU_THRESHOLDS, EvalSettings

REQUIRED_KEYS = ("image", "label", "boxes", "box_valid", "valid")


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def init_counts(settings: EvalSettings) -> dict[str, Any]:
    """Zero counters for one device, each with a leading axis over ``settings.map_kinds``.

    ``loc``: ``LocalizationCounts`` at ``cam_threshold``; with ``box_accuracy`` also ``box``
    (largest box, IoU ``iou_threshold``, grid: GT-known Loc per threshold / MaxBoxAcc),
    ``box_top1`` (the same and top-1 right: Top-1 Loc per threshold) and ``box_v2`` (every
    contour, IoU 0.3/0.5/0.7: MaxBoxAccV2). With ``settings.faithfulness``: the counters of
    ``faithfulness_counts.init_counts``.
    """
    n = len(settings.map_kinds)
    loc = metrics.LocalizationCounts.empty(settings.cam_threshold, settings.iou_threshold)
    out = {"loc": _stack([loc] * n), **faithfulness_counts.init_counts(settings)}
    if not settings.box_accuracy:
        return out
    grid = settings.box_thresholds
    box = metrics.BoxAccuracyCounts.empty(grid, (settings.iou_threshold,), False)
    out.update({"box": _stack([box] * n), "box_top1": _stack([box] * n),
                "box_v2": _stack([metrics.BoxAccuracyCounts.empty(grid, V2_IOU_THRESHOLDS,
                                                                  True)] * n)})
    return out


def update(settings: EvalSettings, logits, features, kernel, batch, valid, counts, *,
           network=None, readout=None):
    """Adds one per-device batch to ``counts`` (traced inside the eval step).

    ``network`` is the ``(model, variables)`` pair: post-hoc maps and faithfulness metrics run
    the model again (required when ``settings`` asks for either). ``readout`` (a
    ``models.Readout`` of the ground-truth class, ``backends.forward_readout``) makes the
    CAM-family maps of multi-branch methods (ACoL); None = ``(features, kernel)``."""
    labels = batch["label"].astype(jnp.int32)
    gt_boxes = batch["boxes"].astype(jnp.int32)
    gt_valid = batch["box_valid"].astype(bool)
    if network is None and (settings.posthoc_kinds or settings.faithfulness):
        raise ValueError("network=(model, variables) is needed for post-hoc map kinds and "
                         "faithfulness metrics")
    model, variables = network if network is not None else (None, None)
    maps = forward.single_label_maps(settings, model, variables, batch["image"], labels,
                                     logits=logits, features=features, kernel=kernel,
                                     readout=readout)
    sm = forward.kind_scoremaps(settings, maps)                                # [K, B, H, W]
    box_opts = backends.box_options(settings)
    faith = {}
    if settings.faithfulness:
        def apply_fn(x):  # main logits (outputs[0]) of every method
            return model.apply(variables, x, train=False)[0]

        faith = faithfulness_counts.update(
            settings, apply_fn, batch["image"], labels, logits, sm, valid, counts,
            maps_fns=_kind_maps_fns(settings, model, variables, kernel, readout))

    top1 = metrics.topk_correct(logits, labels, 1)
    top5 = metrics.topk_correct(logits, labels, settings.top_k)
    # One largest-box pass serves GT-known Loc (threshold 0 of the list) and the grid: the box
    # pass costs the same for any number of thresholds.
    thresholds = np.concatenate([[settings.cam_threshold], settings.box_thresholds])

    def fixed_only(loc, sm):
        best = boxes.max_contour_iou(sm, thresholds[:1], gt_boxes, gt_valid,
                                     multi_contour=False, **box_opts)
        return loc.add(top1, top5, best[:, 0] >= loc.iou_threshold, valid)

    def per_kind(loc, box, box_top1, box_v2, sm):
        best = boxes.max_contour_iou(sm, thresholds, gt_boxes, gt_valid, multi_contour=False,
                                     **box_opts)                             # [B, 1 + T]
        loc = loc.add(top1, top5, best[:, 0] >= loc.iou_threshold, valid)
        box = box.add_iou(best[:, 1:], valid)
        box_top1 = box_top1.add_iou(best[:, 1:], valid, where=top1)
        v2 = boxes.max_contour_iou(sm, box_v2.thresholds, gt_boxes, gt_valid,
                                   multi_contour=True, **box_opts)           # [B, T]
        return loc, box, box_top1, box_v2.add_iou(v2, valid)

    if not settings.box_accuracy:
        return {"loc": jax.vmap(fixed_only)(counts["loc"], sm), **faith}
    loc, box, box_top1, box_v2 = jax.vmap(per_kind)(
        counts["loc"], counts["box"], counts["box_top1"], counts["box_v2"], sm)
    return {"loc": loc, "box": box, "box_top1": box_top1, "box_v2": box_v2, **faith}


def _kind_maps_fns(settings: EvalSettings, model, variables, kernel, readout):
    """Per map kind, ``(images, labels) -> [B, H, W]``: that kind's score maps of new images,
    as this step reads them (the forward pass, the maps, ``forward.kind_scoremaps``). The
    classifier kernel does not depend on the images: the batch's ``kernel`` serves."""
    def maps_fn(kind):
        one = dataclasses.replace(settings, map_kinds=(kind,))

        def fn(images, labels):
            logits, out = backends.forward_readout(model, variables, images, labels,
                                                   kernel_fn=lambda _: kernel)
            branch = out.branches[0]
            maps = forward.single_label_maps(
                one, model, variables, images, labels, logits=logits, features=branch.features,
                kernel=branch.kernel, readout=None if readout is None else out)
            return forward.kind_scoremaps(one, maps)[0]
        return fn

    return [maps_fn(kind) for kind in settings.map_kinds]


def _float(x) -> float:
    return float(np.asarray(x))


def finalize(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, float]:
    """Summed counters -> the flat results dict of the module docstring."""
    res: dict[str, float] = {}
    first = kind_slice(counts["loc"], 0)
    res["num_images"] = float(int(first.count))
    cls = first.result()
    res["top1_cls"] = _float(cls["top1_cls"])
    res["top5_cls"] = _float(cls["top5_cls"])
    res["accuracy"] = res["top1_cls"]
    for i, kind in enumerate(settings.map_kinds):
        loc = kind_slice(counts["loc"], i).result()
        res[f"{kind}/gt_known_loc"] = _float(loc["gt_known_loc"])
        res[f"{kind}/top1_loc"] = _float(loc["top1_loc"])
        if not settings.box_accuracy:
            continue
        box = kind_slice(counts["box"], i).result()
        res[f"{kind}/max_box_acc"] = _float(box["max_box_acc"][0])
        res[f"{kind}/max_box_acc_threshold"] = _float(box["best_threshold"][0])
        v2 = kind_slice(counts["box_v2"], i).result()
        for j, iou in enumerate(V2_IOU_THRESHOLDS):
            res[f"{kind}/max_box_acc_v2_iou{round(100 * iou)}"] = _float(v2["max_box_acc"][j])
        res[f"{kind}/max_box_acc_v2"] = _float(v2["mean_max_box_acc"])
    for i, kind in enumerate(settings.map_kinds):
        res.update(faithfulness_counts.results(settings, counts, i, kind))
    return res


def curves(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Accuracy-versus-threshold curves: ``{kind: {"gt_known_loc": float64 [T],
    "top1_loc": float64 [T]}}`` over ``settings.box_thresholds`` (NaN when nothing counted).

    Raises:
      ValueError: without ``settings.box_accuracy`` (no grid was counted).
    """
    def curve(i):
        box, top1 = kind_slice(counts["box"], i), kind_slice(counts["box_top1"], i)
        n = np.float64(np.asarray(box.count))
        return {"gt_known_loc": np.asarray(box.correct[0], np.float64) / n,
                "top1_loc": np.asarray(top1.correct[0], np.float64) / n}

    return per_kind_curves(settings, counts, "box", curve)
