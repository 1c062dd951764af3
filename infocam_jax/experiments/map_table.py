"""One table of every map kind of one trained model: CAM, infoCAM, infoCAM+ and the post-hoc
maps (Grad-CAM, ...), scored by MaxBoxAccV2 with the threshold chosen on validation and by the
faithfulness metrics (``launch/evaluate.py --map_table``).

MaxBoxAccV2 with the threshold chosen on validation: for each IoU threshold δ ∈ {0.3, 0.5,
0.7}, the score threshold ``t*_δ`` maximising BoxAccV2(t, δ) (every contour's box) on the
validation split (the lowest on ties, ``thresholds.select``), the test BoxAccV2(t*_δ, δ), then
the mean over δ. Beside it the protocol's MaxBoxAccV2 (best threshold on test itself, an
optimistic reading). Both come from the counters of the one eval step (``box_v2``): the
validation pass skips the faithfulness metrics, the test pass counts them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from infocam_jax.devices import Batch
from infocam_jax.evaluation import driver, forward, single_label, step, thresholds
from infocam_jax.evaluation.settings import (
    ATTENTION_MAP_KINDS,
    DISPLAY_NAMES,
    MAP_KINDS,
    POSTHOC_MAP_KINDS,
    V2_IOU_THRESHOLDS,
    EvalSettings,
)

DEFAULT_KINDS = MAP_KINDS + tuple(k for k in POSTHOC_MAP_KINDS if k not in ATTENTION_MAP_KINDS)
DEFAULT_FAITHFULNESS = ("confidence",)


def v2_selection(settings: EvalSettings, validation_counts: Mapping[str, Any],
                 test_counts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """MaxBoxAccV2 at the score thresholds chosen on validation, per map kind (the one copy;
    ``methods_table`` and :func:`evaluate` read it).

    With BoxAcc_split(t, δ) the box accuracy of every contour's box at score threshold ``t`` and
    IoU ``δ in {0.3, 0.5, 0.7}``::

        t*_δ = argmax_t BoxAcc_val(t, δ)          (first maximiser; NaN entries skipped)
        valsel = mean_δ BoxAcc_test(t*_δ, δ)

    Args:
      settings: the EvalSettings both splits were counted with (``box_accuracy=True``).
      validation_counts, test_counts: ``driver.evaluate_counts`` results.

    Returns:
      ``{kind: {"valsel": float, "oracle": mean_δ max_t BoxAcc_test(t, δ) (the protocol's
      MaxBoxAccV2 on test), "thresholds": [t*_δ], "valsel_per_iou": [BoxAcc_test(t*_δ, δ)],
      "validation": mean_δ BoxAcc_val(t*_δ, δ)}}`` (fractions; NaN when empty).
    """
    if "box_v2" not in test_counts or "box_v2" not in validation_counts:
        raise ValueError("v2_selection needs settings.box_accuracy=True")
    grid = settings.box_thresholds
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, kind in enumerate(settings.map_kinds):
            acc = {}
            for split, counts in (("validation", validation_counts), ("test", test_counts)):
                box = single_label.kind_slice(counts["box_v2"], i)
                acc[split] = (np.asarray(box.correct, np.float64)
                              / np.float64(np.asarray(box.count)))          # [3, T]
            picks = [thresholds.select(grid, acc["validation"][j], acc["test"][j])
                     for j in range(len(V2_IOU_THRESHOLDS))]
            out[kind] = {"valsel": float(np.mean([p["test"] for p in picks])),
                         "oracle": float(np.mean([p["best_test"] for p in picks])),
                         "thresholds": [p["threshold"] for p in picks],
                         "valsel_per_iou": [p["test"] for p in picks],
                         "validation": float(np.mean([p["validation"] for p in picks]))}
    return out


def evaluate(settings: EvalSettings, model, variables, validation: Iterable[Batch],
             test: Iterable[Batch], *,
             map_kinds: Sequence[str] = DEFAULT_KINDS,
             faithfulness: Sequence[str] = DEFAULT_FAITHFULNESS,
             num_devices: int | None = None, kinds_per_pass: int | None = None,
             **overrides) -> dict[str, float]:
    """The table's numbers: flat test results (``single_label`` keys, faithfulness included)
    plus ``K/max_box_acc_v2/valsel`` and ``K/max_box_acc_v2/valsel_threshold_iou{30,50,70}``.

    Args:
      settings: the protocol of a single-label config (``EvalSettings.from_config``); the map
        kinds, ``box_accuracy`` and faithfulness of each split are set here.
      model, variables: the trained model.
      validation, test: batches of the two splits (iterables; each read once).
      map_kinds: kinds to compare (default CAM, infoCAM, infoCAM+ and every post-hoc map
        but the transformer-only attention maps).
      faithfulness: metrics counted on test (``EvalSettings.faithfulness``).
      num_devices: local devices (default all).
      kinds_per_pass: map kinds per eval step (None = all in one step). Each group is its own
        compiled step over both splits, so compile time and memory stay bounded with many
        kinds and faithfulness metrics; every kind's numbers are the same either way (each
        kind's counters depend on that kind alone), up to float rounding (another compiled
        program may fuse differently).
      **overrides: further ``EvalSettings`` fields.
    """
    if settings.multi_label:
        raise ValueError("the map table needs a single-label config (multi_label=False)")
    kinds = tuple(map_kinds)
    if kinds_per_pass is not None and int(kinds_per_pass) < 1:
        raise ValueError(f"kinds_per_pass must be >= 1 or None, got {kinds_per_pass}")
    size = int(kinds_per_pass or len(kinds))
    if size >= len(kinds):
        return _evaluate_kinds(settings, model, variables, validation, test, kinds,
                               faithfulness, num_devices, overrides)
    validation, test = list(validation), list(test)  # read once per group
    results: dict[str, float] = {}
    for start in range(0, len(kinds), size):
        group, t0 = kinds[start:start + size], time.perf_counter()
        results.update(_evaluate_kinds(settings, model, variables, validation, test, group,
                                       faithfulness, num_devices, overrides))
        logging.info("map table: %s scored in %.0f s (%d of %d kinds)", ", ".join(group),
                     time.perf_counter() - t0, min(start + size, len(kinds)), len(kinds))
    return results


def _evaluate_kinds(settings: EvalSettings, model, variables, validation: Iterable[Batch],
                    test: Iterable[Batch], kinds: tuple[str, ...], faithfulness: Sequence[str],
                    num_devices: int | None, overrides: Mapping[str, Any]) -> dict[str, float]:
    """:func:`evaluate` of one group of map kinds in one eval step per split."""
    fields = dict(overrides, map_kinds=kinds, box_accuracy=True)
    val_settings = dataclasses.replace(settings, **dict(fields, faithfulness=()))
    test_settings = dataclasses.replace(settings,
                                        **dict(fields, faithfulness=tuple(faithfulness)))
    val_counts = driver.evaluate_counts(val_settings, model, variables, validation,
                                        num_devices=num_devices)
    test_counts = driver.evaluate_counts(test_settings, model, variables, test,
                                         num_devices=num_devices)
    results = step.finalize(test_settings, test_counts)
    for kind, sel in v2_selection(test_settings, val_counts, test_counts).items():
        results[f"{kind}/max_box_acc_v2/valsel"] = sel["valsel"]
        for iou, t in zip(V2_IOU_THRESHOLDS, sel["thresholds"]):
            results[f"{kind}/max_box_acc_v2/valsel_threshold_iou{round(100 * iou)}"] = t
    return results


def seconds_per_image(settings: EvalSettings, model, variables, batch: Batch,
                      map_kinds: Sequence[str], repeats: int = 3) -> dict[str, float]:
    """Wall-clock seconds per image of each map kind alone: the jitted forward pass, the map of
    the ground-truth class and its score map at image size (``forward.predict_maps`` with that
    one kind), on ``batch`` (compiled and run once before timing; the median of ``repeats``
    runs, divided by the batch size).

    Args:
      settings: single-label evaluation settings.
      model, variables: the trained model.
      batch: ``{"image": [B,H,W,C], "label": [B]}`` (host arrays).
      map_kinds: kinds to time.
      repeats: timed runs per kind (>= 1).

    Returns:
      ``{kind: seconds per image}``.
    """
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    images = jax.device_put(np.asarray(batch["image"]))
    labels = jax.device_put(np.asarray(batch["label"], np.int32))
    out = {}
    for kind in map_kinds:
        s_k = dataclasses.replace(settings, map_kinds=(kind,), faithfulness=())
        run = jax.jit(functools.partial(forward.predict_maps, s_k, model))
        jax.block_until_ready(run(variables, images, labels)["scoremaps"])
        times = []
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            jax.block_until_ready(run(variables, images, labels)["scoremaps"])
            times.append(time.perf_counter() - t0)
        out[kind] = float(np.median(times)) / images.shape[0]
    return out


def _pct(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def format_table(results: Mapping[str, float], map_kinds: Sequence[str] = DEFAULT_KINDS,
                 settings: EvalSettings | None = None) -> str:
    """Markdown: one row per map kind; MaxBoxAccV2 (validation-chosen threshold, and the
    protocol's best-on-test), GT-known Loc at the fixed threshold, and the faithfulness
    columns present in ``results`` (%; "-" when missing)."""
    def get(key):
        return results.get(key, float("nan"))

    columns = [("MaxBoxAccV2, t chosen on validation", "max_box_acc_v2/valsel"),
               ("MaxBoxAccV2 (best t on test)", "max_box_acc_v2"),
               ("GT-known Loc", "gt_known_loc")]
    optional = [("Average drop ↓", "average_drop"),
                ("Increase in confidence ↑", "increase_in_confidence"),
                ("ROAD MoRF score change ↓", "road_morf"),
                ("ROAD LeRF score change ↑", "road_lerf"),
                ("ROAD combined ↑", "road_combined"),
                ("Deletion AUC ↓", "deletion_auc"),
                ("Insertion AUC ↑", "insertion_auc"),
                ("Complexity ↓", "complexity")]
    columns += [c for c in optional if any(f"{k}/{c[1]}" in results for k in map_kinds)]
    timed = any(f"{k}/seconds_per_image" in results for k in map_kinds)
    lines = ["| Map | " + " | ".join(name for name, _ in columns)
             + (" | ms / image |" if timed else " |"),
             "|---|" + "---:|" * (len(columns) + timed)]
    for kind in map_kinds:
        cells = [_pct(get(f"{kind}/{key}")) for _, key in columns]
        if timed:
            ms = 1e3 * get(f"{kind}/seconds_per_image")
            cells.append("-" if math.isnan(ms) else f"{ms:.2f}")
        lines.append(f"| {DISPLAY_NAMES.get(kind, kind)} | " + " | ".join(cells) + " |")
    n = results.get("num_images", float("nan"))
    legend = (f"Test split ({int(n) if not math.isnan(n) else '-'} images), %. MaxBoxAccV2: "
              "mean over IoU 0.3/0.5/0.7 of the box accuracy of every contour's box, at the "
              "score threshold chosen per IoU on validation (or the best on test). Average drop "
              "/ increase in confidence: Chattopadhay et al. 2018, softmax score of the "
              "ground-truth class on the image times the score map. Deletion / insertion "
              "AUC: RISE (Petsiuk et al. 2018), that score as the most relevant pixels are set "
              "to zero / put back on the blurred image. Top-1 Cls "
              f"{_pct(get('top1_cls'))} %.")
    if timed:
        legend += (" ms / image: the map of one kind alone with the forward pass and its score "
                   "map, jitted, on one evaluation batch (``seconds_per_image``).")
    if settings is not None:
        legend += f" Reading: {settings.reading}."
    return "\n".join(lines) + "\n\n" + legend + "\n"
