r"""The method table: every WSOL method of ``config.methods`` trained and read as CAM / infoCAM /
infoCAM+, under MaxBoxAccV2 with the score thresholds chosen on validation.

``reproduction.reproduce`` hands a config with a non-empty ``config.methods`` here (the launcher
is launch/reproduce.py; the demonstration is configs/methods_cluttered.py). Layout:
``<workdir>/<method>/seed<k>/`` holds one training run (``train.train_and_evaluate`` with
``config.method = method``; restartable, a finished run is reused) and its
``methods_eval.json``; ``<workdir>/summary.{md,json}`` the table.

The reading (one per map kind K of ``config.map_kinds`` and run): the maps of the ground-truth
class become score maps (``config.normalize``), every contour's box is scored against the
ground truth at each score threshold ``t`` of the grid (``config.num_box_thresholds``) and IoU
``δ in {0.3, 0.5, 0.7}``, giving BoxAcc_split(t, δ). MaxBoxAccV2 (Choe et al. 2020) takes
``max_t`` on the split itself; we choose the threshold on validation, the reference protocol's
*train-fullsup* split, and read the test split there:

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

from infocam_jax.evaluation import json_files
from infocam_jax.experiments import seed_tables
from infocam_jax.evaluation import single_label
from infocam_jax.evaluation.settings import EvalSettings

KINDS = ("cam", "infocam", "infocam_plus")
KIND_NAMES = {"cam": "CAM", "infocam": "infoCAM", "infocam_plus": "infoCAM+"}
EVAL_FILE = "methods_eval.json"


def v2_selection(settings: EvalSettings, validation_counts: Mapping[str, Any],
                 test_counts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Eq. (V) per map kind from the summed counters of both splits.

    Args:
      settings: the EvalSettings both splits were counted with (``box_accuracy=True``).
      validation_counts, test_counts: ``driver.evaluate_counts`` results.

    Returns:
      ``{kind: {"valsel": float, "oracle": float, "thresholds": [I] chosen t*_δ,
      "valsel_per_iou": [I], "validation": float (mean_δ BoxAcc_val(t*_δ, δ))}}``.
    """
    grid = np.asarray(settings.box_thresholds, np.float64)
    out = {}
    for i, kind in enumerate(settings.map_kinds):
        val = np.asarray(single_label.kind_slice(validation_counts["box_v2"], i).result()
                         ["box_acc"], np.float64)                               # [I, T]
        test = np.asarray(single_label.kind_slice(test_counts["box_v2"], i).result()
                          ["box_acc"], np.float64)
        best = np.argmax(val, axis=1)                                            # [I]
        per_iou = test[np.arange(test.shape[0]), best]
        out[kind] = {"valsel": float(np.mean(per_iou)), "oracle": float(np.mean(test.max(1))),
                     "thresholds": grid[best].tolist(), "valsel_per_iou": per_iou.tolist(),
                     "validation": float(np.mean(val.max(1)))}
    return out


def method_config(config, method: str, seed: int):
    """The training config of one (method, seed): ``config`` with ``method``, its one loss,
    ``seed``, no ``methods`` list, and the cheap per-epoch validation of
    ``reproduction.training_config``."""
    from infocam_jax.experiments import reproduction  # pylint: disable=import-outside-toplevel
    sub = reproduction.training_config(config, str(config.loss), seed)
    sub.method = str(method)
    sub.methods = ()
    return sub


def evaluate_run(config, model, variables, split_batches) -> dict[str, Any]:
    """Counts validation and test once with the box grid of ``config`` (map kinds
    ``config.map_kinds``); returns (V) and the flat results of both splits."""
    from infocam_jax.evaluation import driver  # pylint: disable=import-outside-toplevel
    kinds = tuple(config.get("map_kinds", KINDS) or KINDS)
    settings = EvalSettings.from_config(config, map_kinds=kinds, box_accuracy=True)
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
    head = ("| Method | " + " | ".join(KIND_NAMES.get(k, k) for k in kinds)
            + " | Top-1 Cls | train s / seed |")
    lines = [head, "|---|" + "---:|" * (len(kinds) + 2)]
    for method, recs in records.items():
        cells = [_cell([r["eval"]["selection"][k][key] for r in recs]) for k in kinds]
        cls = _cell([r["eval"]["test"]["top1_cls"] for r in recs])
        secs = np.mean([r["train_seconds"] for r in recs])
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {cls} | {secs:.0f} |")
    return "\n".join(lines)


def reproduce_methods(config, workdir: str, *, seeds: Sequence[int], reevaluate: bool = False,
                      log=print) -> dict:
    """Trains every (method, seed) of ``config.methods`` x ``seeds``, reads (V), writes the table.

    Args:
      config: experiment ConfigDict with ``methods`` (tuple of train_methods.METHODS) and
        ``map_kinds`` (default CAM, infoCAM, infoCAM+); single-label.
      workdir: output root.
      seeds: training seeds.
      reevaluate: evaluate again even when a run's ``methods_eval.json`` exists.
      log: progress printer.

    Returns:
      the summary dict written to ``<workdir>/summary.json``.
    """
    from infocam_jax.experiments import reproduction  # pylint: disable=import-outside-toplevel
    from infocam_jax.train import trainer
    methods = tuple(str(m) for m in config.methods)
    kinds = tuple(config.get("map_kinds", KINDS) or KINDS)
    if bool(config.multi_label):
        raise ValueError("config.methods needs a single-label config (config.multi_label=False)")
    if len(set(methods)) != len(methods) or not seeds:
        raise ValueError(f"config.methods must list distinct methods and seeds must be "
                         f"non-empty, got {methods}, {list(seeds)}")
    # Every method's config (and its model on this backbone) is checked before any training.
    models = {m: trainer.create_model(method_config(config, m, seeds[0])) for m in methods}
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    t0 = time.time()
    split_batches = {s: reproduction.load_split(config, s) for s in ("validation", "test")}
    counts = {s: sum(int(np.sum(b["valid"])) for b in bs) for s, bs in split_batches.items()}
    log(f"loaded {counts} evaluation examples in {time.time() - t0:.1f}s")
    records = {}
    for method in methods:
        records[method] = []
        for seed in seeds:
            run_dir = os.path.join(workdir, method, f"seed{seed}")
            path = os.path.join(run_dir, EVAL_FILE)
            if os.path.exists(path) and not reevaluate:
                with open(path) as f:
                    record = json.load(f)
                log(f"[{method} seed {seed}] reusing {path}")
            else:
                sub = method_config(config, method, seed)
                t0 = time.time()
                trainer.train_and_evaluate(sub, run_dir)
                train_s = time.time() - t0
                variables, extra = trainer.restore_variables(sub, run_dir, "best")
                t0 = time.time()
                # Settings of the experiment config (the training config counts CAM only).
                result = evaluate_run(config, models[method], variables, split_batches)
                record = {"method": method, "seed": int(seed), "train_seconds": train_s,
                          "eval_seconds": time.time() - t0, "best_epoch": int(extra["epoch"]),
                          "eval": result}
                json_files.write_json(record, path)
                log(f"[{method} seed {seed}] trained in {train_s:.0f}s, evaluated in "
                    f"{record['eval_seconds']:.0f}s: " + ", ".join(
                        f"{KIND_NAMES.get(k, k)} {100 * result['selection'][k]['valsel']:.1f}"
                        for k in kinds))
            records[method].append(record)
    wall = time.time() - t_start
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
    log("\n" + report)
    return out
