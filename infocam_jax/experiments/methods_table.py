r"""The method study: every WSOL method of ``config.methods`` trained with its learning rate chosen
on validation, read as CAM / infoCAM / infoCAM+ at the score thresholds chosen on validation,
and the paper's Table-5 ablation (region R x subtraction term) from the same checkpoints.

``infocam-reproduce`` runs a config with a non-empty ``config.methods`` here (the study is
configs/methods_cluttered.py; ``reproduction.reproduce`` refuses such a config). Layout:
``<workdir>/<method>/lr<lr>/seed<k>/`` holds one training run (``training.train_and_evaluate``
with ``config.method = method`` and that learning rate; restartable, a finished run is reused)
and its ``methods_eval.json``; ``<workdir>/summary.{md,json}`` the tables.

**Learning rate.** For each method, every rate of ``config.learning_rates`` (empty: the one
``config.optimizer.learning_rate``) is trained with the first seed; the rate with the highest
*validation* top-1 classification is chosen (the lowest rate on ties), and the other seeds are
trained with it. A grid rate whose loss becomes NaN or infinite is recorded as diverged and
left out of the choice (the study stops only when every rate diverges, or when a later seed
diverges at the chosen rate). The criterion is the classifier's, so the choice favours no map
kind.

**Readings** (one per map kind K of ``config.map_kinds`` and run): the maps of the ground-truth
class become score maps (``config.normalize``), every contour's box is scored against the
ground truth at each score threshold ``t`` of the grid (``config.num_box_thresholds``) and IoU
``δ in {0.3, 0.5, 0.7}``, giving BoxAcc_split(t, δ). MaxBoxAccV2 (Choe et al. 2020) takes
``max_t`` on the split itself; we choose the threshold on validation, the reference protocol's
*train-fullsup* split, and read the test split there (``map_table.v2_selection``):

    t*_δ = argmax_t BoxAcc_val(t, δ)          (first maximiser)
    MaxBoxAccV2_valsel = mean_δ BoxAcc_test(t*_δ, δ),                                 (V)

beside the oracle ``mean_δ max_t BoxAcc_test(t, δ)``. GT-known Loc and Top-1 Loc (largest box,
IoU >= 0.5) are read the same way: each at the threshold maximising it on validation
(``thresholds.selection``).

**Ablation** (methods of ``config.ablation_methods``; R of ``config.ablation_region_sizes``):
the paper's Table 5 crosses the region R with the subtraction term of eq. 2. At each R the
same checkpoint is read as ``cam_region`` (the R x R sum of CAM: subtraction off; at R = 1
this is CAM), ``infocam`` (minus the mean of the other classes) and ``infocam_plus`` (minus
the least-likely class), with the readings above.

The tables give the mean ± sample standard deviation (ddof = 1) over seeds; a gain over CAM is
marked when it exceeds both seed spreads (``mean_k - mean_cam > max(std_k, std_cam)``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from infocam_jax import config as config_lib
from infocam_jax.evaluation import driver, forward, json_files, single_label, thresholds
from infocam_jax.evaluation.settings import DISPLAY_NAMES, MAP_KINDS, EvalSettings
from infocam_jax.experiments import figures, reproduction, seed_tables, training
from infocam_jax.experiments.map_table import v2_selection
from infocam_jax.train import loop, trainer

EVAL_FILE = "methods_eval.json"
# The study's own fields of the experiment config (not read by a training run).
STUDY_FIELDS = ("methods", "learning_rates", "ablation_methods", "ablation_region_sizes")
# Table 5's subtraction term: off, the mean of the other classes, the least-likely class.
ABLATION_KINDS = ("cam_region", "infocam", "infocam_plus")
SUBTRACTION_NAMES = {"cam_region": "off (R x R sum of CAM)",
                     "infocam": "mean of the other classes (infoCAM)",
                     "infocam_plus": "least-likely class (infoCAM+)"}
LOC_METRICS = ("gt_known_loc", "top1_loc")


def learning_rates(config) -> tuple[float, ...]:
    """The grid: ``config.learning_rates``, or ``(config.optimizer.learning_rate,)``."""
    rates = tuple(float(r) for r in (config.get("learning_rates", ()) or ()))
    return rates or (float(config.optimizer.learning_rate),)


def run_dir(workdir: str, method: str, learning_rate: float, seed: int) -> str:
    """``<workdir>/<method>/lr<learning_rate>/seed<seed>``."""
    return os.path.join(workdir, method, f"lr{learning_rate:g}", f"seed{int(seed)}")


def method_config(config, method: str, seed: int, learning_rate: float | None = None):
    """The training config of one (method, seed, rate): ``config`` with ``method``, its one loss,
    ``seed``, the rate (default: the config's), the study's own fields emptied, and the cheap
    per-epoch validation of ``reproduction.training_config``."""
    sub = reproduction.training_config(config, str(config.loss), seed)
    sub.method = str(method)
    for name in STUDY_FIELDS:
        if name in sub:
            sub[name] = ()
    if learning_rate is not None:
        sub.optimizer.learning_rate = float(learning_rate)
    return sub


def _readings(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, Any]:
    """(V) per map kind and GT-known / Top-1 Loc at the validation-chosen thresholds."""
    return {"selection": v2_selection(settings, counts["validation"], counts["test"]),
            "loc": thresholds.flat_selection(
                thresholds.selection(settings, counts["validation"], counts["test"]))}


def evaluate_run(settings: EvalSettings, model, variables, split_batches, *,
                 ablation_region_sizes: Sequence[int] = ()) -> dict[str, Any]:
    """Counts validation and test once under ``settings`` (the experiment's protocol with its
    map kinds and the box grid, ``box_accuracy=True``), and once per ablation R.

    Returns:
      ``{"selection": (V) per kind, "loc": GT-known / Top-1 Loc at the validation-chosen
      thresholds (``thresholds.flat_selection`` keys), "test", "validation": the flat results
      of both splits, "ablation": {R: {"selection", "loc"}} over ``ABLATION_KINDS``}``.
    """
    def counted(s):
        return {split: driver.evaluate_counts(s, model, variables, b)
                for split, b in split_batches.items()}

    counts = counted(settings)
    out = _readings(settings, counts)
    out["test"] = json_files.json_clean(single_label.finalize(settings, counts["test"]))
    out["validation"] = json_files.json_clean(single_label.finalize(settings,
                                                                    counts["validation"]))
    out["ablation"] = {}
    for r in ablation_region_sizes:
        s_r = dataclasses.replace(settings, region_size=int(r), map_kinds=ABLATION_KINDS)
        out["ablation"][str(int(r))] = _readings(s_r, counted(s_r))
    return json_files.json_clean(out)


# ----------------------------------------------------------------------------- tables

def _pct(values: Sequence[float]) -> tuple[float, float]:
    return seed_tables.mean_std([100.0 * v for v in values])


def _cell(values: Sequence[float]) -> str:
    mean, std = _pct(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {std:.1f}"


def _gain_mark(values: Sequence[float], base: Sequence[float]) -> str:
    """"†" when the mean gain over ``base`` exceeds both seed spreads (two seeds at least)."""
    if len(values) < 2 or len(base) < 2:
        return ""
    (m, s), (mb, sb) = _pct(values), _pct(base)
    return " †" if m - mb > max(s, sb) else ""


def _reading(record: Mapping[str, Any], kind: str, metric: str, key: str = "valsel") -> float:
    if metric == "max_box_acc_v2":
        return record["selection"][kind][key]
    name = {"valsel": "valsel", "oracle": "best_test"}[key]
    return record["loc"][f"{kind}/{metric}/{name}"]


def table(records: Mapping[str, Sequence[Mapping[str, Any]]], kinds: Sequence[str],
          metric: str = "max_box_acc_v2", key: str = "valsel") -> str:
    """Markdown: one row per method, one column per map kind (percent, mean ± std over seeds,
    "†" = gain over the CAM column beyond both seed spreads), plus top-1 classification,
    the learning rate and training seconds per run.

    Args:
      records: ``{method: [run record]}`` (a record's ``eval`` is :func:`evaluate_run`'s).
      kinds: map kinds (columns); the gain is taken against ``"cam"`` when it is among them.
      metric: "max_box_acc_v2" (V), "gt_known_loc" or "top1_loc".
      key: "valsel" (threshold chosen on validation) or "oracle" (best threshold on test).
    """
    head = ("| Method | " + " | ".join(DISPLAY_NAMES.get(k, k) for k in kinds)
            + " | Top-1 Cls | lr | train s / run |")
    lines = [head, "|---|" + "---:|" * (len(kinds) + 3)]
    for method, recs in records.items():
        per_kind = {k: [_reading(r["eval"], k, metric, key) for r in recs] for k in kinds}
        cells = [_cell(v) + (_gain_mark(v, per_kind["cam"]) if k != "cam" and "cam" in per_kind
                             else "") for k, v in per_kind.items()]
        cls = _cell([r["eval"]["test"]["top1_cls"] for r in recs])
        secs = np.mean([r["train_seconds"] for r in recs])
        lines.append(f"| {method} | " + " | ".join(cells)
                     + f" | {cls} | {recs[0]['learning_rate']:g} | {secs:.0f} |")
    return "\n".join(lines)


def grid_table(grid: Mapping[str, Mapping[float, Mapping[str, Any]]],
               chosen: Mapping[str, float]) -> str:
    """Markdown: per method and rate, validation top-1 (the criterion), test top-1 and the
    validation MaxBoxAccV2 of CAM (for reference); the chosen rate in bold."""
    lines = [("| Method | lr | validation Top-1 Cls | test Top-1 Cls | "
              "validation MaxBoxAccV2 (CAM) | chosen |"), "|---|---:|---:|---:|---:|:---:|"]
    for method, by_rate in grid.items():
        for rate, rec in by_rate.items():
            pick = rate == chosen[method]
            lr = f"**{rate:g}**" if pick else f"{rate:g}"
            if "diverged" in rec:
                lines.append(f"| {method} | {lr} | diverged | - | - | |")
                continue
            ev = rec["eval"]
            lines.append(f"| {method} | {lr} | {100 * ev['validation']['top1_cls']:.1f} | "
                         f"{100 * ev['test']['top1_cls']:.1f} | "
                         f"{100 * ev['selection']['cam']['validation']:.1f} | "
                         f"{'✓' if pick else ''} |")
    return "\n".join(lines)


def ablation_table(records: Mapping[str, Sequence[Mapping[str, Any]]],
                   region_sizes: Sequence[int]) -> str:
    """Markdown: the Table-5 ablation, one row per (method, R, subtraction term): MaxBoxAccV2
    (V), GT-known Loc and Top-1 Loc at the validation-chosen thresholds (mean ± std)."""
    lines = ["| Method | R | Subtraction term | MaxBoxAccV2 | GT-known Loc | Top-1 Loc |",
             "|---|---:|---|---:|---:|---:|"]
    for method, recs in records.items():
        if not all(recs[0]["eval"]["ablation"].get(str(r)) for r in region_sizes):
            continue
        for r in region_sizes:
            for kind in ABLATION_KINDS:
                evs = [rec["eval"]["ablation"][str(r)] for rec in recs]
                cells = [_cell([_reading(e, kind, m) for e in evs])
                         for m in ("max_box_acc_v2",) + LOC_METRICS]
                lines.append(f"| {method} | {r} | {SUBTRACTION_NAMES[kind]} | "
                             + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the study

def _method_run(config, settings: EvalSettings, model, method: str, rate: float, seed: int,
                workdir: str, split_batches, *, reevaluate: bool, log,
                allow_divergence: bool = False) -> dict:
    """One (method, rate, seed): trains it (restartable) and reads it, or reuses its
    ``methods_eval.json``; returns that record.

    With ``allow_divergence`` (the learning-rate grid), a training whose loss becomes NaN or
    infinite (``loop.NonFiniteLossError``) is a result, not a failure: its record is
    ``{"method", "learning_rate", "seed", "train_seconds", "diverged": message}`` (no
    ``eval``), written like any other so that a resumed study does not train it again.
    """
    directory = run_dir(workdir, method, rate, seed)
    path = os.path.join(directory, EVAL_FILE)
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
        if not reevaluate or "diverged" in record:  # a diverged run has nothing to re-read
            log(f"[{method} lr {rate:g} seed {seed}] reusing {path}")
            return record
    sub = method_config(config, method, seed, rate)
    t0 = time.time()
    try:
        training.train_and_evaluate(sub, directory)
    except loop.NonFiniteLossError as e:
        if not allow_divergence:
            raise
        record = {"method": method, "learning_rate": float(rate), "seed": int(seed),
                  "train_seconds": time.time() - t0, "diverged": str(e)}
        json_files.write_json(record, path)
        log(f"[{method} lr {rate:g} seed {seed}] diverged: {e}")
        return record
    train_s = time.time() - t0
    previous = os.path.join(directory, "train_seconds.json")
    if os.path.exists(previous):  # a re-evaluation keeps the training's own wall-clock
        with open(previous) as f:
            train_s = float(json.load(f)["train_seconds"])
    else:
        json_files.write_json({"train_seconds": train_s}, previous)
    variables, extra = trainer.restore_variables(sub, directory, "best")
    ablation = (tuple(int(r) for r in config.get("ablation_region_sizes", ()) or ())
                if method in tuple(config.get("ablation_methods", ()) or ()) else ())
    t0 = time.time()
    result = evaluate_run(settings, model, variables, split_batches,
                          ablation_region_sizes=ablation)
    record = {"method": method, "learning_rate": float(rate), "seed": int(seed),
              "train_seconds": train_s, "eval_seconds": time.time() - t0,
              "best_epoch": int(extra["epoch"]), "eval": result}
    json_files.write_json(record, path)
    log(f"[{method} lr {rate:g} seed {seed}] trained in {train_s:.0f}s, evaluated in "
        f"{record['eval_seconds']:.0f}s, top-1 {100 * result['test']['top1_cls']:.1f}: "
        + ", ".join(f"{DISPLAY_NAMES.get(k, k)} {100 * v['valsel']:.1f}"
                    for k, v in result["selection"].items()))
    return record


def choose_rate(by_rate: Mapping[float, Mapping[str, Any]]) -> float:
    """The rate with the highest validation top-1 classification (the lowest on ties); rates
    whose training diverged (records with ``"diverged"``) are out."""
    rates = sorted(r for r, rec in by_rate.items() if "diverged" not in rec)
    if not rates:
        raise ValueError(f"every learning rate of the grid diverged ({sorted(by_rate)}): "
                         f"{[by_rate[r]['diverged'] for r in sorted(by_rate)]}; add lower "
                         f"rates to config.learning_rates")
    scores = [by_rate[r]["eval"]["validation"]["top1_cls"] for r in rates]
    return rates[int(np.argmax(scores))]


def draw_figure(config, settings: EvalSettings, models: Mapping[str, Any],
                records: Mapping[str, Sequence[Mapping[str, Any]]], workdir: str,
                batch: Mapping[str, np.ndarray], path: str, num_images: int = 6) -> tuple[int, int]:
    """A PNG of every method's maps on the same test images: one row per (method, map kind),
    ground-truth boxes red, each map's box green at its GT-known threshold chosen on validation.

    Reads each method's first record (the learning-rate grid's seed at the chosen rate) from its
    checkpoint; the maps are of the ground-truth class. Returns the PNG size.
    """
    batch = {k: np.asarray(v)[:num_images] for k, v in batch.items()}
    labels = batch["label"].astype(np.int32)
    scoremaps, boxes = {}, {}
    for method, recs in records.items():
        rec = recs[0]
        sub = method_config(config, method, rec["seed"], rec["learning_rate"])
        variables, _ = trainer.restore_variables(
            sub, run_dir(workdir, method, rec["learning_rate"], rec["seed"]), "best")
        for kind in settings.map_kinds:
            t = rec["eval"]["loc"][f"{kind}/gt_known_loc/valsel_threshold"]
            s_k = dataclasses.replace(settings, map_kinds=(kind,), cam_threshold=float(t))
            out = forward.predict_maps(s_k, models[method], variables, batch["image"], labels)
            row = f"{method} {figures.ROW_NAMES.get(kind, kind)}"
            scoremaps[row] = np.asarray(out["scoremaps"][kind])
            boxes[row] = np.asarray(out["boxes"][kind])
    return figures.render_grid(batch["image"], scoremaps, batch["boxes"], batch["box_valid"],
                               boxes, path)


def _checked_models(config, methods: Sequence[str], seeds: Sequence[int]) -> dict:
    """Every method's config checked (``config.validate``) and its model built, before any
    training or writing."""
    if bool(config.multi_label):
        raise ValueError("config.methods needs a single-label config (config.multi_label=False)")
    if len(set(methods)) != len(methods) or not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"config.methods must list distinct methods and seeds must be "
                         f"distinct and non-empty, got {methods}, {list(seeds)}")
    rates = learning_rates(config)
    if len(set(rates)) != len(rates) or not all(r > 0 for r in rates):
        raise ValueError(f"config.learning_rates must be distinct positive rates, got {rates}")
    unknown = [m for m in (config.get("ablation_methods", ()) or ()) if m not in methods]
    sizes = tuple(config.get("ablation_region_sizes", ()) or ())
    if unknown or not all(isinstance(r, int) and r >= 1 for r in sizes):
        raise ValueError(f"config.ablation_methods must be among config.methods {methods} and "
                         f"config.ablation_region_sizes ints >= 1, got "
                         f"{tuple(config.get('ablation_methods', ()))}, {sizes}")
    models = {}
    for m in methods:
        sub = method_config(config, m, seeds[0])
        config_lib.validate(sub)
        models[m] = trainer.create_model(sub)
    return models


def _write_report(config, workdir: str, records, grid, chosen, methods, kinds, seeds,
                  wall: float) -> tuple[dict, str]:
    n_thr = int(config.num_box_thresholds)
    sizes = tuple(int(r) for r in (config.get("ablation_region_sizes", ()) or ()))
    report = (
        f"{config.model} on {config.dataset}; {len(seeds)} seed(s) {list(seeds)}, mean ± sample "
        f"std over seeds; test split; maps {config.get('normalize', 'minmax')}-normalised, "
        f"{config.upsample} upsampling, {n_thr} score thresholds, infoCAM region "
        f"R = {int(config.region_size)}. † = gain over CAM beyond both seed spreads.\n\n"
        "Learning rate chosen per method on the validation top-1 classification of seed "
        f"{seeds[0]}:\n\n" + grid_table(grid, chosen)
        + "\n\nMaxBoxAccV2 (mean over IoU 0.3 / 0.5 / 0.7 of the box accuracy at the score "
          "threshold chosen on the validation split per IoU):\n\n"
        + table(records, kinds, "max_box_acc_v2")
        + "\n\nGT-known Loc (largest box, IoU ≥ 0.5) at the threshold chosen on validation:\n\n"
        + table(records, kinds, "gt_known_loc")
        + "\n\nTop-1 Loc at the threshold chosen on validation:\n\n"
        + table(records, kinds, "top1_loc")
        + "\n\nFor reference, the oracle MaxBoxAccV2 (thresholds chosen on the test split "
          "itself):\n\n" + table(records, kinds, "max_box_acc_v2", "oracle"))
    if sizes:
        report += ("\n\nAblation (the paper's Table 5: region R x subtraction term; same "
                   "checkpoints, readings as above):\n\n" + ablation_table(records, sizes))
    report += (f"\n\nWall-clock of this invocation: {wall:.0f} s (runs reused from earlier "
               "invocations cost nothing here).\n")
    out = {"methods": list(methods), "seeds": [int(s) for s in seeds], "map_kinds": list(kinds),
           "learning_rates": {m: chosen[m] for m in methods}, "wall_seconds": wall,
           "runs": records,
           "grid": {m: {f"{r:g}": rec for r, rec in g.items()} for m, g in grid.items()},
           "config": json.loads(config.to_json_best_effort())}
    json_files.write_json(out, os.path.join(workdir, "summary.json"))
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(f"# {config.dataset}: methods {', '.join(methods)}; seeds {list(seeds)}\n\n"
                + report)
    return out, report


def reproduce_methods(config, workdir: str, *, seeds: Sequence[int], reevaluate: bool = False,
                      figure: str = "", log=print) -> dict:
    """The learning-rate grid, the seeds at the chosen rates, the tables.

    Args:
      config: experiment ConfigDict with ``methods`` (names of ``infocam_jax.methods.names()``),
        ``map_kinds`` (default CAM, infoCAM, infoCAM+), optional ``learning_rates``,
        ``ablation_methods`` and ``ablation_region_sizes``; single-label.
      workdir: output root.
      seeds: training seeds; the first one runs the learning-rate grid.
      reevaluate: evaluate again even when a run's ``methods_eval.json`` exists (finished
        trainings are reused).
      figure: PNG path of :func:`draw_figure` on the first test images ("" = none).
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

    def run(method, rate, seed, allow_divergence=False):
        return _method_run(config, settings, models[method], method, rate, seed, workdir,
                           split_batches, reevaluate=reevaluate, log=log,
                           allow_divergence=allow_divergence)

    grid, chosen, records = {}, {}, {}
    for m in methods:
        grid[m] = {rate: run(m, rate, seeds[0], allow_divergence=True)
                   for rate in learning_rates(config)}
        chosen[m] = choose_rate(grid[m])
        records[m] = [grid[m][chosen[m]]] + [run(m, chosen[m], s) for s in seeds[1:]]
    out, report = _write_report(config, workdir, records, grid, chosen, methods, kinds, seeds,
                                time.time() - t_start)
    log("\n" + report)
    if figure:
        size = draw_figure(config, settings, models, records, workdir,
                           split_batches["test"][0], figure)
        log(f"figure {figure}: {size[0]}x{size[1]} px")
    return out
