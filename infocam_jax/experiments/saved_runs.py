"""Reads saved reproduction runs (``<workdir>/<head>/seed<k>``) under both normalisations.

For every run, restores the best checkpoint (selected on validation top-1 during training) and
evaluates validation and test with ``evaluation.thresholds.evaluate_readings``: min-max (WSOL
protocol) and max-normalised (``max(m, 0) / max(m)``, the paper's §3.1), each at the fixed
``config.cam_threshold``, at the threshold chosen on validation, and at the best threshold on
test (MaxBoxAcc-style, optimistic). Nothing is retrained. Writes ``<run>/readings.json`` per
run and ``<workdir>/readings_summary.{md,json}`` (mean ± sample std over seeds; the table and
its keys are ``evaluation.readings_table``).
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

from infocam_jax import config as config_lib
from infocam_jax.experiments import reproduction
from infocam_jax.train import trainer
from infocam_jax.evaluation import json_files
from infocam_jax.experiments import readings, readings_table, seed_tables
from infocam_jax.evaluation.settings import CAM_FAMILY_KINDS, MULTI_LABEL_MAP_KINDS


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
    checked = config_lib.validate(config)  # the one check, before anything is read or written
    model = trainer.create_model(config)  # config.method and its options included
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
                variables, extra = trainer.restore_variables(sub, run_dir, "best")
                best["epoch"] = float(extra["epoch"])
                return variables

            cached = os.path.exists(path) and not force
            t0 = time.time()
            flat = readings.cached_flat(
                config, model, load_variables, splits, path, reevaluate=force,
                flatten=lambda result, best=best: {**readings_table.flat(result),
                                                  "best_epoch": best["epoch"]})
            log(f"[{head} seed {seed}] reusing {path}" if cached
                else f"[{head} seed {seed}] read in {time.time() - t0:.0f}s")
            per_head[head].append(flat)
    aggs = {h: seed_tables.aggregate(v) for h, v in per_head.items()}
    kinds = tuple(config.get("map_kinds", None) or (MULTI_LABEL_MAP_KINDS if multi
                                                    else CAM_FAMILY_KINDS))
    text = readings_table.render(aggs, dataclasses.replace(checked.settings, map_kinds=kinds),
                                 seeds, wall_seconds=time.time() - t_start)
    with open(os.path.join(workdir, "readings_summary.md"), "w") as f:
        f.write(text)
    json_files.write_json({"aggregate": aggs, "per_seed": per_head},
                          os.path.join(workdir, "readings_summary.json"))
    return text
