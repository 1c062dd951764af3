"""Tables over seeds (``mean ± std``, percent) of a reproduction (``infocam_jax.experiments.reproduction``).

Runs are flat ``{"split/key": value}`` dicts (``split/R{r}/key`` for region-size ablations,
``split/t{t}/...`` for threshold sweeps); :func:`aggregate` gives mean and sample standard
deviation (ddof=1) per key. The tables printed here: the paper's Table-1 / Table-2 shapes with an
R ablation, the score-threshold sweep and the multi-label (threshold, R) grid; each report starts
with :func:`reading_line`. The readings table (CAM vs infoCAM under every reading) is
``readings_table``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from infocam_jax.evaluation.settings import DISPLAY_NAMES, MULTI_LABEL_MAP_KINDS, NORMALIZE_NAMES

# R-independent result keys are taken from the main region size only.
_SINGLE_METRICS = ("gt_known_loc", "top1_loc", "max_box_acc", "max_box_acc_v2")
# Map kinds by their display names (evaluation.settings), infoCAM+ naming its rival beside the
# region-rival variant; then the heads.
DISPLAY = {**DISPLAY_NAMES, "infocam_plus": "infoCAM+ (image rival)", "sigmoid": "sigmoid",
           "pc_sigmoid": "PC-sigmoid", "softmax": "softmax", "pc_softmax": "PC-softmax"}


def reading_line(normalize: str, cam_threshold: float, iou_threshold: float) -> str:
    """The sentence every report starts with: how maps became boxes."""
    return (f"Reading: score maps {NORMALIZE_NAMES.get(normalize, normalize)}, fixed threshold "
            f"{cam_threshold:g} unless a column says otherwise, largest box, IoU >= "
            f"{iou_threshold:g}.")


def flatten(results: Mapping[str, Mapping[str, Mapping[str, float]]], main_region_size: int
            ) -> dict[str, float]:
    """``{split: {R: results}}`` -> flat ``{"split/key": v}`` (main R) and ``"split/R{r}/key"``."""
    flat = {}
    for split, per_r in results.items():
        for r, res in per_r.items():
            for key, value in res.items():
                flat[f"{split}/R{r}/{key}"] = float(value)
                if int(r) == main_region_size:
                    flat[f"{split}/{key}"] = float(value)
    return flat


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) ignoring NaNs."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def aggregate(per_seed: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``{key: {"mean", "std", "n"}}`` over the seeds' flat result dicts (keys in all seeds)."""
    keys = [k for k in per_seed[0] if all(k in r for r in per_seed)]
    out = {}
    for k in keys:
        m, s = mean_std([r[k] for r in per_seed])
        out[k] = {"mean": m, "std": s, "n": len(per_seed)}
    return out


def pm(agg: Mapping[str, Mapping[str, float]], key: str, scale: float = 100.0,
       digits: int = 1) -> str:
    """``"mean ± std"`` of ``agg[key]`` scaled (percent by default); "-" when missing/NaN."""
    if key not in agg or math.isnan(agg[key]["mean"]):
        return "-"
    a = agg[key]
    return f"{scale * a['mean']:.{digits}f} ± {scale * a['std']:.{digits}f}"


def multi_label_report(aggs: Mapping[str, Mapping], baselines: Mapping[str, float],
                       region_sizes: Sequence[int], main_r: int, split: str = "test") -> str:
    """Markdown: per-digit classification, CAM vs infoCAM localisation, R ablation."""
    heads = list(aggs)
    digits = range(10)
    lines = [f"Split: **{split}** (best validation epoch per seed); mean ± std over seeds, %.",
             "", "Per-digit classification accuracy (`logit_j > 0` vs the multi-hot target):", "",
             "| Head | " + " | ".join(str(d) for d in digits) + " | Mean | Exact match |",
             "|---|" + "---:|" * 12]
    for h in heads:
        a = aggs[h]
        lines.append(f"| {DISPLAY.get(h, h)} | "
                     + " | ".join(pm(a, f"{split}/digit_acc/{d}") for d in digits)
                     + f" | {pm(a, f'{split}/cls_acc')} | {pm(a, f'{split}/exact_match')} |")
    lines += ["", f"Localisation accuracy over (image, present digit) pairs (R = {main_r} for "
                  "infoCAM):", "",
              "| Head | CAM | infoCAM | infoCAM − CAM |", "|---|---:|---:|---:|"]
    for h in heads:
        a = aggs[h]
        lines.append(f"| {DISPLAY.get(h, h)} | {pm(a, f'{split}/cam/loc_acc')} | "
                     f"{pm(a, f'{split}/infocam/loc_acc')} | "
                     f"{pm(a, f'{split}/infocam_minus_cam/loc_acc')} |")
    lines += ["", "Per-digit localisation accuracy:", "",
              "| Head | Map | " + " | ".join(str(d) for d in digits) + " |",
              "|---|---|" + "---:|" * 10]
    for h in heads:
        for kind in MULTI_LABEL_MAP_KINDS:
            lines.append(f"| {DISPLAY.get(h, h)} | {DISPLAY[kind]} | "
                         + " | ".join(pm(aggs[h], f"{split}/{kind}/loc_acc/{d}", digits=0)
                                      for d in digits) + " |")
    lines += ["", "Region-size ablation of infoCAM localisation (R = 1 is CAM itself; same "
                  "checkpoints):", "",
              "| R | " + " | ".join(f"{DISPLAY.get(h, h)} validation | {DISPLAY.get(h, h)} test"
                                   for h in heads) + " |",
              "|---:|" + "---:|---:|" * len(heads)]
    for r in region_sizes:
        cells = []
        for h in heads:
            for s in ("validation", "test"):
                cells.append(pm(aggs[h], f"{s}/R{r}/infocam/loc_acc"))
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += ["", "Input-blind reference boxes (same metric, every ground-truth digit box of the "
                  f"{split} split):", ""]
    lines += [f"- {k.replace('_', ' ')}: {100 * v:.1f} %" for k, v in baselines.items()]
    return "\n".join(lines) + "\n"


def single_label_report(aggs: Mapping[str, Mapping], baselines: Mapping[str, float],
                        region_sizes: Sequence[int], main_r: int, map_kinds: Sequence[str],
                        split: str = "test") -> str:
    """Markdown: the paper's Table-1 columns plus MaxBoxAcc / MaxBoxAccV2, and an R ablation."""
    lines = [f"Split: **{split}** (best validation epoch per seed); mean ± std over seeds, %; "
             f"R = {main_r}.", ""]
    for h, a in aggs.items():
        lines += [f"Head: {DISPLAY.get(h, h)}; Top-1 Cls {pm(a, f'{split}/top1_cls')}, "
                  f"Top-5 Cls {pm(a, f'{split}/top5_cls')}", "",
                  "| Map | GT-known Loc | Top-1 Loc | MaxBoxAcc (IoU 0.5) | MaxBoxAccV2 |",
                  "|---|---:|---:|---:|---:|"]
        for kind in map_kinds:
            lines.append(f"| {DISPLAY.get(kind, kind)} | "
                         + " | ".join(pm(a, f"{split}/{kind}/{m}") for m in _SINGLE_METRICS)
                         + " |")
        if len(region_sizes) > 1:
            kinds = [k for k in map_kinds if k != "cam"]
            lines += ["", "Region-size ablation, GT-known Loc (validation / test):", "",
                      "| R | " + " | ".join(DISPLAY.get(k, k) for k in kinds) + " |",
                      "|---:|" + "---:|" * len(kinds)]
            for r in region_sizes:
                lines.append(f"| {r} | " + " | ".join(
                    f"{pm(a, f'validation/R{r}/{k}/gt_known_loc')} / "
                    f"{pm(a, f'test/R{r}/{k}/gt_known_loc')}" for k in kinds) + " |")
        lines.append("")
    lines += ["Input-blind reference boxes (GT-known Loc of a box that ignores the image, "
              f"{split} split):", ""]
    lines += [f"- {k.replace('_', ' ')}: {100 * v:.1f} %" for k, v in baselines.items()]
    return "\n".join(lines) + "\n"


def threshold_report(aggs: Mapping[str, Mapping], thresholds: Sequence[float],
                     map_kinds: Sequence[str], metric: str) -> str:
    """Markdown table of ``metric`` against the CAM score threshold, per head and map kind."""
    ts = [f"{float(t):g}" for t in thresholds]
    cols = [(h, k) for h in aggs for k in map_kinds]
    lines = ["", f"Score-threshold sweep ({metric}, validation / test; the protocol's fixed "
                 "threshold is 0.2):", "",
             "| threshold | " + " | ".join(f"{DISPLAY.get(h, h)} {DISPLAY.get(k, k)}"
                                          for h, k in cols) + " |",
             "|---:|" + "---:|" * len(cols)]
    for t in ts:
        lines.append(f"| {t} | " + " | ".join(
            f"{pm(aggs[h], f'validation/t{t}/{k}/{metric}')} / "
            f"{pm(aggs[h], f'test/t{t}/{k}/{metric}')}" for h, k in cols) + " |")
    lines.append("| selected on validation: test | " + " | ".join(
        f"{pm(aggs[h], f'test/valsel/{k}/{metric}')} (t = "
        f"{pm(aggs[h], f'valsel/{k}/threshold', scale=1.0, digits=2)})" for h, k in cols)
        + " |")
    return "\n".join(lines) + "\n"


def grid_report(aggs: Mapping[str, Mapping], thresholds: Sequence[float],
                region_sizes: Sequence[int]) -> str:
    """Markdown: multi-label localisation on the test split against the score threshold, for
    CAM and infoCAM at each R, and the (threshold, R) selected on validation."""
    ts = [f"{float(t):g}" for t in thresholds]
    lines = ["", "Localisation accuracy (test, %) against the score threshold (the protocol "
                 "above uses 0.2) and R; mean ± std over seeds:", ""]
    for h, a in aggs.items():
        lines += [f"Head {DISPLAY.get(h, h)}:", "",
                  "| threshold | CAM | " + " | ".join(f"infoCAM R={r}" for r in region_sizes)
                  + " |", "|---:|" + "---:|" * (1 + len(region_sizes))]
        for t in ts:
            lines.append(f"| {t} | {pm(a, f'test/t{t}/R1/cam/loc_acc')} | " + " | ".join(
                pm(a, f"test/t{t}/R{r}/infocam/loc_acc") for r in region_sizes) + " |")
        lines.append("")
    lines += ["Threshold (and R) selected on the validation split, accuracy on the test split:",
              "", "| Head | CAM | CAM threshold | infoCAM | infoCAM threshold | infoCAM R |",
              "|---|---:|---:|---:|---:|---:|"]
    for h, a in aggs.items():
        lines.append(f"| {DISPLAY.get(h, h)} | {pm(a, 'test/valsel/cam/loc_acc')} | "
                     f"{pm(a, 'valsel/cam/threshold', 1.0, 2)} | "
                     f"{pm(a, 'test/valsel/infocam/loc_acc')} | "
                     f"{pm(a, 'valsel/infocam/threshold', 1.0, 2)} | "
                     f"{pm(a, 'valsel/infocam/R', 1.0, 1)} |")
    return "\n".join(lines) + "\n"
