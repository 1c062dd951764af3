"""CAM vs infoCAM under several readings of the maps: the paper's, the protocol's, and the
threshold chosen on validation under each normalisation, with the optimistic best threshold.

This is the main job's printout (``config.eval_readings``): per head, one compact table of
test localisation accuracy, CAM vs infoCAM, one row per reading, and a one-line legend. Values
come from ``thresholds.evaluate_readings`` (validation and test, both normalisations, one
compiled step per normalisation shared by every head).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from infocam_jax.evaluation import common, reports, thresholds
from infocam_jax.evaluation.settings import DISPLAY_NAMES, EvalSettings

METRIC_NAMES = {"loc_acc": "localisation accuracy over (image, present digit) pairs",
                "gt_known_loc": "GT-known Loc", "top1_loc": "Top-1 Loc"}


def load_splits(config, splits: Sequence[str] = ("validation", "test")
                ) -> dict[str, list[dict[str, np.ndarray]]]:
    """This process's eval batches of each split, kept in memory (``max_eval_batches`` kept)."""
    import itertools  # pylint: disable=import-outside-toplevel
    from infocam_jax import data  # pylint: disable=import-outside-toplevel
    max_batches = int(config.get("max_eval_batches", 0)) or None
    out = {}
    for split in splits:
        it = data.make_iterator(config, split, training=False,
                                batch_size=int(config.eval_batch_size) // jax.process_count(),
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
        out[split] = [{k: np.asarray(v) for k, v in b.items()}
                      for b in itertools.islice(it, max_batches)]
    return out


def evaluate_run(config, model, variables, splits=None) -> dict[str, dict[str, Any]]:
    """``thresholds.evaluate_readings`` on the validation and test splits of ``config``."""
    splits = splits or load_splits(config)
    return thresholds.evaluate_readings(config, model, variables, splits["validation"],
                                        splits["test"])


def _cell(value: float, threshold: float | None = None) -> str:
    text = reports.pct(value, 1)
    if threshold is not None and text != "-":
        text += f" (t {threshold:.2f})"
    return text


def rows(readings: Mapping[str, Mapping[str, Any]], metric: str,
         kinds: Sequence[str] = ("cam", "infocam")) -> list[tuple[str, list[str], float]]:
    """``(reading name, [cell per kind], last kind minus first kind)`` for every reading."""
    fixed_key = "loc_acc" if metric == "loc_acc" else metric
    out = []
    t_fix = readings["max"]["settings"].cam_threshold

    def fixed(mode):
        vals = [readings[mode]["test"].get(f"{k}/{fixed_key}", float("nan")) for k in kinds]
        return [_cell(v) for v in vals], vals[-1] - vals[0]

    def chosen(mode, value, threshold):
        sel = [readings[mode]["selection"][k][metric] for k in kinds]
        return ([_cell(s[value], s[threshold]) for s in sel],
                sel[-1][value] - sel[0][value])

    out.append((f"paper: max-normalised, t = {t_fix:g}", *fixed("max")))
    out.append((f"protocol: min-max, t = {t_fix:g}", *fixed("minmax")))
    out.append(("min-max, t chosen on validation", *chosen("minmax", "test", "threshold")))
    out.append(("max-normalised, t chosen on validation", *chosen("max", "test", "threshold")))
    out.append(("min-max, best t on test (MaxBoxAcc-style)",
                *chosen("minmax", "best_test", "best_threshold")))
    out.append(("max-normalised, best t on test", *chosen("max", "best_test", "best_threshold")))
    return out


def legend(readings: Mapping[str, Mapping[str, Any]]) -> str:
    """The one-line legend under each table."""
    s = readings["minmax"]["settings"]
    n = len(s.box_thresholds)
    return (f"Legend: test split, %, largest box at IoU >= {s.iou_threshold:g}; min-max = "
            "(m - min)/(max - min) (WSOL protocol), max-normalised = max(m, 0)/max(m) (paper "
            f"§3.1); t = score threshold, chosen from {n} values in [0, 1) by validation "
            "accuracy, or the best on test (optimistic).")


def table(readings: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Markdown: per swept metric, rows = readings, columns = CAM, infoCAM, difference."""
    s = readings["minmax"]["settings"]
    kinds = [k for k in ("cam", "infocam") if k in s.map_kinds] or list(s.map_kinds[:2])
    lines = []
    for metric in thresholds.metrics_of(s):
        lines += [f"{title}{METRIC_NAMES[metric]}" if title else METRIC_NAMES[metric], "",
                  "| reading | " + " | ".join(DISPLAY_NAMES.get(k, k) for k in kinds)
                  + " | " + " − ".join(DISPLAY_NAMES.get(k, k) for k in kinds[::-1]) + " |",
                  "|---|" + "---:|" * (len(kinds) + 1)]
        for name, cells, diff in rows(readings, metric, kinds):
            d = "-" if np.isnan(diff) else f"{100 * diff:+.1f}"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {d} |")
        lines.append("")
    return "\n".join(lines) + legend(readings) + "\n"


def to_json(readings: Mapping[str, Mapping[str, Any]]) -> dict:
    """JSON-ready copy: settings as their reading line, curves as lists."""
    return {mode: {"reading": r["settings"].reading, "validation": r["validation"],
                   "test": r["test"], "selection": r["selection"]}
            for mode, r in readings.items()}


def write(readings_by_head: Mapping[str, Mapping[str, Any]], workdir: str) -> str:
    """Writes ``<workdir>/readings.json`` (curves, chosen thresholds, both splits)."""
    return common.write_json({h: to_json(r) for h, r in readings_by_head.items()},
                             os.path.join(workdir, "readings.json"))


def write_heads_summary(all_results: Mapping[str, Mapping[str, float]],
                        readings_by_head: Mapping[str, Mapping[str, Any]], workdir: str,
                        config) -> str:
    """Writes a heads run's ``results.md`` / ``results.json`` (and ``readings.json``).

    Per head the Markdown holds the readings table when ``readings_by_head`` has the head,
    else its fixed-threshold tables (with their reading line).

    Returns:
      the Markdown text.
    """
    settings = EvalSettings.from_config(config)
    parts = []
    for head, results in all_results.items():
        if head in readings_by_head:
            parts.append(f"## {head}\n\n{table(readings_by_head[head])}")
        else:
            parts.append(f"## {head}\n\n{reports.format_table(results, settings)}")
    text = "\n".join(parts)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(text)
    common.write_json(dict(all_results), os.path.join(workdir, "results.json"))
    if readings_by_head:
        write(readings_by_head, workdir)
    return text


def flat(readings: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Scalars of every reading, for aggregation over seeds:
    ``readings/{mode}/{kind}/{metric}/fixed`` (test, fixed threshold) and the
    ``thresholds.flat_selection`` keys under ``readings/{mode}/``."""
    out = {}
    for mode, r in readings.items():
        for kind, per_metric in r["selection"].items():
            for metric in per_metric:
                out[f"readings/{mode}/{kind}/{metric}/fixed"] = float(
                    r["test"].get(f"{kind}/{metric}", float("nan")))
        for key, value in thresholds.flat_selection(r["selection"]).items():
            out[f"readings/{mode}/{key}"] = float(value)
    return out


def cached_flat(config, model, load_variables, splits, path: str, *,
                reevaluate: bool = False, flatten=None, **overrides) -> dict[str, float]:
    """``flatten`` (default :func:`flat`) of ``thresholds.evaluate_readings`` on
    ``splits["validation"]`` and ``splits["test"]``, cached with the full curves in the JSON
    file ``path`` (``load_variables()`` gives the variables; called only when not cached, and
    before ``flatten``)."""
    import json  # pylint: disable=import-outside-toplevel
    if os.path.exists(path) and not reevaluate:
        with open(path) as f:
            return {k: (float("nan") if v is None else v) for k, v in json.load(f)["flat"].items()}
    out = thresholds.evaluate_readings(config, model, load_variables(), splits["validation"],
                                       splits["test"], **overrides)
    values = (flatten or flat)(out)
    common.write_json({"flat": values, "readings": to_json(out)}, path)
    return values
