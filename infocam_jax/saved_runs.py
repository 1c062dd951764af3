"""Reads saved reproduction runs (``<workdir>/<head>/seed<k>``) under both normalisations.

For every run, restores the best checkpoint (selected on validation top-1 during training) and
evaluates validation and test with ``evaluation.thresholds.evaluate_readings``: min-max (WSOL
protocol) and max-normalised (``max(m, 0) / max(m)``, the paper's §3.1), each at the fixed
``config.cam_threshold``, at the threshold chosen on validation, and at the best threshold on
test (MaxBoxAcc-style, optimistic). Nothing is retrained. Writes ``<run>/readings.json`` per
run and ``<workdir>/readings_summary.{md,json}`` (mean ± sample std over seeds).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from infocam_jax import reproduction, train
from infocam_jax.evaluation import common, readings, summary, thresholds

MODES = ("max", "minmax")


def flat_run(result) -> dict[str, float]:
    """One run's readings as flat scalars ``mode/kind/...`` and ``mode/<test result key>``."""
    flat = {}
    for mode, r in result.items():
        for key, value in r["test"].items():
            flat[f"{mode}/test/{key}"] = float(value)
        for key, value in thresholds.flat_selection(r["selection"]).items():
            flat[f"{mode}/{key}"] = float(value)
    return flat


def table(aggs, kinds, metric: str, t_fixed: float) -> str:
    """Markdown: rows = (head, reading), columns = map kinds (mean ± std, %; thresholds)."""
    def cell(agg, key, thr_key=None):
        if key not in agg:
            return "-"
        text = summary.pm(agg, key)
        if thr_key and thr_key in agg:
            text += f" (t {agg[thr_key]['mean']:.2f})"
        return text
    rows = [("max-normalised, t = %g (paper)" % t_fixed, "max", "fixed"),
            ("min-max, t = %g (protocol)" % t_fixed, "minmax", "fixed"),
            ("max-normalised, t chosen on validation", "max", "valsel"),
            ("min-max, t chosen on validation", "minmax", "valsel"),
            ("max-normalised, best t on test", "max", "best_test"),
            ("min-max, best t on test", "minmax", "best_test")]
    lines = ["| head | reading | " + " | ".join(kinds) + " |",
             "|---|---|" + "---:|" * len(kinds)]
    for head, agg in aggs.items():
        for name, mode, what in rows:
            cells = []
            for kind in kinds:
                if what == "fixed":
                    cells.append(cell(agg, f"{mode}/test/{kind}/{metric}"))
                elif what == "valsel":
                    cells.append(cell(agg, f"{mode}/{kind}/{metric}/valsel",
                                      f"{mode}/{kind}/{metric}/valsel_threshold"))
                else:
                    cells.append(cell(agg, f"{mode}/{kind}/{metric}/best_test",
                                      f"{mode}/{kind}/{metric}/best_threshold"))
            lines.append(f"| {head} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_fixed(aggs, kinds, key: str) -> str:
    """Markdown: rows = (head, normalisation), columns = kinds, of a test result ``key``."""
    lines = ["| head | normalisation | " + " | ".join(kinds) + " |",
             "|---|---|" + "---:|" * len(kinds)]
    for head, agg in aggs.items():
        for mode in MODES:
            cells = [summary.pm(agg, f"{mode}/test/{k}/{key}")
                     if f"{mode}/test/{k}/{key}" in agg else "-" for k in kinds]
            lines.append(f"| {head} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_runs(config, workdir: str, *, heads: Sequence[str] | None = None,
              seeds: Sequence[int] = (0, 1, 2), force: bool = False,
              log: Callable[[str], None] = print) -> str:
    """Reads every (head, seed) run of ``workdir`` under both readings; returns the Markdown
    summary (also written to ``<workdir>/readings_summary.md``).

    Args:
      config: the experiment config with the training invocation's data overrides (they select
        the canvases); ``config.map_kinds`` (optional) picks the map kinds.
      workdir: the reproduction output root.
      heads: losses (default: ``reproduction.heads_of(config)``).
      seeds: training seeds.
      force: read again runs that already have ``readings.json``.
      log: progress printer.
    """
    multi = bool(config.multi_label)
    heads = tuple(heads or reproduction.heads_of(config))
    seeds = [int(s) for s in seeds]
    model = train.create_model(config)  # config.method and its options included
    splits = readings.load_splits(config)
    per_head, t_start = {}, time.time()
    for head in heads:
        per_head[head] = []
        for seed in seeds:
            run_dir = os.path.join(workdir, head, f"seed{seed}")
            path = os.path.join(run_dir, "readings.json")
            sub = reproduction.training_config(config, head, seed)
            best = {}

            def load_variables(sub=sub, run_dir=run_dir, best=best):
                variables, extra = train.restore_variables(sub, run_dir, "best")
                best["epoch"] = float(extra["epoch"])
                return variables

            cached = os.path.exists(path) and not force
            t0 = time.time()
            flat = readings.cached_flat(
                config, model, load_variables, splits, path, reevaluate=force,
                flatten=lambda result, best=best: {**flat_run(result), "best_epoch": best["epoch"]})
            log(f"[{head} seed {seed}] reusing {path}" if cached
                else f"[{head} seed {seed}] read in {time.time() - t0:.0f}s")
            per_head[head].append(flat)
    aggs = {h: summary.aggregate(v) for h, v in per_head.items()}
    kinds = list(config.get("map_kinds", None) or (reproduction.MULTI_LABEL_KINDS if multi
                                                   else reproduction.SINGLE_LABEL_KINDS))
    metrics = ("loc_acc",) if multi else ("gt_known_loc", "top1_loc")
    t_fixed = float(config.cam_threshold)
    parts = [f"Test split, %, mean ± std over seeds {seeds}; largest box at IoU >= "
             f"{float(config.iou_threshold):g}; R = {int(config.region_size)}; threshold grid "
             f"np.arange(0, 1, 1/{int(config.num_box_thresholds)}); min-max = (m - min)/(max - "
             "min), max-normalised = max(m, 0)/max(m).\n"]
    cls_keys = [k for k in ("cls_acc", "exact_match", "top1_cls", "top5_cls")
                if any(f"minmax/test/{k}" in agg for agg in aggs.values())]
    parts.append("Classification (test): " + "; ".join(
        f"{head} " + ", ".join(f"{k} {summary.pm(agg, f'minmax/test/{k}')}" for k in cls_keys)
        for head, agg in aggs.items()) + ".\n")
    for metric in metrics:
        parts.append(f"**{metric}**\n\n" + table(aggs, kinds, metric, t_fixed))
    if not multi:
        for key in ("max_box_acc", "max_box_acc_v2"):
            parts.append(f"**{key}** (threshold maximised on test, by definition)\n\n"
                         + table_fixed(aggs, kinds, key))
    text = "\n".join(parts) + f"\nWall-clock: {time.time() - t_start:.0f} s.\n"
    with open(os.path.join(workdir, "readings_summary.md"), "w") as f:
        f.write(text)
    common.write_json({"aggregate": aggs, "per_seed": per_head},
                      os.path.join(workdir, "readings_summary.json"))
    return text
