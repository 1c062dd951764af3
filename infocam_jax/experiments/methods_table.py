r"""The method table: every WSOL method of ``config.methods`` trained and read as CAM / infoCAM /
infoCAM+, under MaxBoxAccV2 with the score thresholds chosen on validation.

``infocam-reproduce`` runs a config with a non-empty ``config.methods`` here (the demonstration
is configs/methods_cluttered.py; ``reproduction.reproduce`` refuses such a config). Layout:
``<workdir>/<method>/seed<k>/`` holds one training run (``training.train_and_evaluate`` with
``config.method = method``; restartable, a finished run is reused) and its
``methods_eval.json``; ``<workdir>/summary.{md,json}`` the table.

The reading (one per map kind K of ``config.map_kinds`` and run): the maps of the ground-truth
class become score maps (``config.normalize``), every contour's box is scored against the
ground truth at each score threshold ``t`` of the grid (``config.num_box_thresholds``) and IoU
``δ in {0.3, 0.5, 0.7}``, giving BoxAcc_split(t, δ). MaxBoxAccV2 (Choe et al. 2020) takes
``max_t`` on the split itself; we choose the threshold on validation, the reference protocol's
*train-fullsup* split, and read the test split there (``map_table.v2_selection``):

    t*_δ = argmax_t BoxAcc_val(t, δ)          (first maximiser)
    MaxBoxAccV2_valsel = mean_δ BoxAcc_test(t*_δ, δ),                                 (V)

beside the oracle ``mean_δ max_t BoxAcc_test(t, δ)`` (what MaxBoxAccV2 reports) for reference.
The table gives the mean ± sample standard deviation (ddof = 1) over seeds.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any, Mapping

import numpy as np

from infocam_jax import config as config_lib
from infocam_jax.evaluation import driver, json_files, single_label
from infocam_jax.evaluation.settings import DISPLAY_NAMES, MAP_KINDS, EvalSettings
from infocam_jax.experiments import reproduction, seed_tables
from infocam_jax.experiments.map_table import v2_selection
from infocam_jax.train import trainer
from infocam_jax.experiments import training

EVAL_FILE = "methods_eval.json"


def method_config(config, method: str, seed: int):
    """The training config of one (method, seed): ``config`` with ``method``, its one loss,
    ``seed``, no ``methods`` list, and the cheap per-epoch validation of
    ``reproduction.training_config``."""
    sub = reproduction.training_config(config, str(config.loss), seed)
    sub.method = str(method)
    sub.methods = ()
    return sub


def evaluate_run(settings: EvalSettings, model, variables, split_batches) -> dict[str, Any]:
    """Counts validation and test once under ``settings`` (the experiment's protocol with its
    map kinds and the box grid, ``box_accuracy=True``); returns (V) and the flat results of
    both splits."""
    counts = {s: driver.evaluate_counts(settings, model, variables, b)
              for s, b in split_batches.items()}
    return {"selection": v2_selection(settings, counts["validation"], counts["test"]),
            "test": json_files.json_clean(single_label.finalize(settings, counts["test"])),
            "validation": json_files.json_clean(single_label.finalize(settings,
                                                                   counts["validation"]))}


def _cell(values: Sequence[float]) -> str:
    mean, std = seed_tables.mean_std([100.0 * v for v in values])
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def table(records: Mapping[str, Sequence[Mapping[str, Any]]], kinds: Sequence[str],
          key: str = "valsel") -> str:
    """Markdown: one row per method, one column per map kind (percent, mean ± std over seeds),
    plus top-1 classification and training seconds."""
    head = ("| Method | " + " | ".join(DISPLAY_NAMES.get(k, k) for k in kinds)
            + " | Top-1 Cls | train s / seed |")
    lines = [head, "|---|" + "---:|" * (len(kinds) + 2)]
    for method, recs in records.items():
        cells = [_cell([r["eval"]["selection"][k][key] for r in recs]) for k in kinds]
        cls = _cell([r["eval"]["test"]["top1_cls"] for r in recs])
        secs = np.mean([r["train_seconds"] for r in recs])
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {cls} | {secs:.0f} |")
    return "\n".join(lines)


def _method_run(config, settings: EvalSettings, model, method: str, seed: int, run_dir: str,
                split_batches, *, reevaluate: bool, log) -> dict:
    """One (method, seed): trains it (restartable) and reads (V) on both splits, or reuses
    ``<run_dir>/methods_eval.json``; returns that record."""
    path = os.path.join(run_dir, EVAL_FILE)
    if os.path.exists(path) and not reevaluate:
        with open(path) as f:
            record = json.load(f)
        log(f"[{method} seed {seed}] reusing {path}")
        return record
    sub = method_config(config, method, seed)
    t0 = time.time()
    training.train_and_evaluate(sub, run_dir)
    train_s = time.time() - t0
    variables, extra = trainer.restore_variables(sub, run_dir, "best")
    t0 = time.time()
    # Settings of the experiment config (the training config counts CAM only).
    result = evaluate_run(settings, model, variables, split_batches)
    record = {"method": method, "seed": int(seed), "train_seconds": train_s,
              "eval_seconds": time.time() - t0, "best_epoch": int(extra["epoch"]),
              "eval": result}
    json_files.write_json(record, path)
    log(f"[{method} seed {seed}] trained in {train_s:.0f}s, evaluated in "
        f"{record['eval_seconds']:.0f}s: " + ", ".join(
            f"{DISPLAY_NAMES.get(k, k)} {100 * v['valsel']:.1f}"
            for k, v in result["selection"].items()))
    return record


def _checked_models(config, methods: Sequence[str], seeds: Sequence[int]) -> dict:
    """Every method's config checked (``config.validate``) and its model built, before any
    training or writing."""
    if bool(config.multi_label):
        raise ValueError("config.methods needs a single-label config (config.multi_label=False)")
    if len(set(methods)) != len(methods) or not seeds:
        raise ValueError(f"config.methods must list distinct methods and seeds must be "
                         f"non-empty, got {methods}, {list(seeds)}")
    models = {}
    for m in methods:
        sub = method_config(config, m, seeds[0])
        config_lib.validate(sub)
        models[m] = trainer.create_model(sub)
    return models


def _write_report(config, workdir: str, records, methods, kinds, seeds, wall: float
                  ) -> tuple[dict, str]:
    n_thr = int(config.num_box_thresholds)
    report = (
        f"MaxBoxAccV2 (%, test split; mean over IoU 0.3 / 0.5 / 0.7 of the box accuracy at the "
        f"score threshold chosen on the validation split per IoU, {n_thr} thresholds; maps "
        f"{config.get('normalize', 'minmax')}-normalised, {config.upsample} upsampling, "
        f"infoCAM region R = {int(config.region_size)}); {config.model} on {config.dataset}, "
        f"{len(seeds)} seed(s) {list(seeds)}, mean ± sample std over seeds.\n\n"
        + table(records, kinds, "valsel")
        + "\n\nFor reference, the oracle MaxBoxAccV2 (thresholds chosen on the test split "
          "itself):\n\n" + table(records, kinds, "oracle")
        + f"\n\nWall-clock of this invocation: {wall:.0f} s (runs reused from earlier "
          "invocations cost nothing here).\n")
    out = {"methods": list(methods), "seeds": [int(s) for s in seeds], "map_kinds": list(kinds),
           "wall_seconds": wall, "runs": records,
           "config": json.loads(config.to_json_best_effort())}
    json_files.write_json(out, os.path.join(workdir, "summary.json"))
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(f"# {config.dataset}: methods {', '.join(methods)}; seeds {list(seeds)}\n\n"
                + report)
    return out, report


def reproduce_methods(config, workdir: str, *, seeds: Sequence[int], reevaluate: bool = False,
                      log=print) -> dict:
    """Trains every (method, seed) of ``config.methods`` x ``seeds``, reads (V), writes the table.

    Args:
      config: experiment ConfigDict with ``methods`` (names of ``infocam_jax.methods.names()``) and
        ``map_kinds`` (default CAM, infoCAM, infoCAM+); single-label.
      workdir: output root.
      seeds: training seeds.
      reevaluate: evaluate again even when a run's ``methods_eval.json`` exists.
      log: progress printer.

    Returns:
      the summary dict written to ``<workdir>/summary.json``.
    """
    methods = tuple(str(m) for m in config.methods)
    kinds = tuple(config.get("map_kinds", MAP_KINDS) or MAP_KINDS)
    models = _checked_models(config, methods, seeds)
    settings = EvalSettings.from_config(config, map_kinds=kinds, box_accuracy=True)
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    split_batches = {s: reproduction.load_split(config, s) for s in ("validation", "test")}
    counts = {s: sum(int(np.sum(b["valid"])) for b in bs) for s, bs in split_batches.items()}
    log(f"loaded {counts} evaluation examples in {time.time() - t_start:.1f}s")
    records = {m: [_method_run(config, settings, models[m], m, seed,
                               os.path.join(workdir, m, f"seed{seed}"), split_batches,
                               reevaluate=reevaluate, log=log) for seed in seeds]
               for m in methods}
    out, report = _write_report(config, workdir, records, methods, kinds, seeds,
                                time.time() - t_start)
    log("\n" + report)
    return out
