"""Reproduction driver: one experiment config over several seeds and heads, evaluated at several
infoCAM region sizes (and score thresholds), aggregated into ``summary.{md,json}``.

Layout: one training run per (head, seed) in ``<workdir>/<head>/seed<k>/`` through
``training.train_and_evaluate`` (restartable: a finished run is not retrained), then the best
checkpoint by validation top-1 classification accuracy (the paper's model selection; nothing is
selected on the test split) is evaluated on the validation and the test split with the full
protocol, and ``<workdir>/summary.{md,json}`` gather every seed and the mean ± sample standard
deviation (ddof=1) over seeds.

Why a separate full evaluation: model selection during training reads top-1 classification
only (``evaluation.evaluators``: classification each epoch), and each training run's own final
test pass evaluates CAM only with a one-point threshold grid (``map_kinds=("cam",)``,
``num_box_thresholds=1``, unless ``config.evals`` is set: the localisation numbers in each
run's own ``results.*`` are therefore not the reported ones). The reported numbers come from
the cached eval step (``evaluation.step``), compiled once per settings and reused across seeds,
heads and splits, so a region-size ablation costs one forward pass per R and no retraining.
Maps become boxes under ``config.normalize`` (every report says which).

Metrics: ``infocam_jax.evaluation``; input-blind baselines: ``evaluation.baselines``; tables:
``evaluation.seed_tables`` and, for the readings, ``evaluation.readings_table`` (keys under
``readings/``). The launcher is ``launch/reproduce.py``.

``reproduce`` runs these steps in order: :func:`_resolve` (arguments), :func:`load_split` (eval
batches kept in memory), per (head, seed) :func:`_trained_record` (train and evaluate, or reuse
``reproduce_eval.json``) and :func:`_run_flat` (its flat scalars: R ablation, threshold sweep,
readings), then :func:`_report` (Markdown), :func:`_figure` and :func:`_write_summary`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import flax
import jax
import ml_collections
import numpy as np

from infocam_jax import config as config_lib
from infocam_jax import data
from infocam_jax.experiments import baselines as ref
from infocam_jax.experiments import figures
from infocam_jax.models import convert
from infocam_jax.train import checkpoints
from infocam_jax.train import state as ts
from infocam_jax.train import trainer
from infocam_jax.experiments import training
from infocam_jax.evaluation import json_files, region_grid
from infocam_jax.experiments import readings_table, seed_tables
from infocam_jax.experiments import readings as rd
from infocam_jax.evaluation.settings import (CAM_FAMILY_KINDS, MULTI_LABEL_MAP_KINDS,
                                             EvalSettings)

SPLITS = ("validation", "test")


def training_config(config, head: str, seed: int):
    """The config of one training run: ``config`` with ``loss=head``, ``seed=seed``, no heads,
    and a cheap per-epoch validation (CAM only, 1-point box grid; see the module docstring).

    Args:
      config: experiment ConfigDict (docs/interfaces.md fields).
      head: loss name ("sigmoid", "pc_sigmoid", "softmax", "pc_softmax").
      seed: training seed (initialisation and data order; the canvases stay the same).

    Returns:
      A new, unlocked ConfigDict.
    """
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.loss = str(head)
    sub.heads = ()
    sub.seed = int(seed)
    if sub.evals.to_dict() == config_lib.DEFAULT_EVALS:  # a config's own evals are kept
        sub.map_kinds = ("cam",)
        sub.num_box_thresholds = 1
    return sub


def heads_of(config) -> tuple[str, ...]:
    """The heads to train: ``config.heads`` when set, else ``(config.loss,)``."""
    heads = tuple(config.get("heads", ()) or ())
    return heads or (str(config.loss),)


def write_fan_in_init(config, seed: int, path: str, gain: float = 2.0) -> str:
    """Writes He-normal *fan-in* initial weights of ``config.model`` for ``config.pretrained``.

    Why: ``models.layers.Conv`` initialises He-normal on fan-*out* (torchvision's choice, made
    for networks that are then loaded with pretrained weights). Trained from scratch, the
    BatchNorm-free ``digits_cnn`` of before 2026-11-25 10:19 started with GAP features ~17x
    smaller than with fan-in scaling and SGD sat on the initial plateau for hundreds of steps
    (loss at the prior's entropy). The current digits CNN has BatchNorm, so this is off by
    default and kept for BatchNorm-free models. Every
    conv kernel ``[k, k, C_in, C_out]`` is redrawn from ``N(0, gain / (k*k*C_in))`` (seeded by
    ``seed``); biases stay zero; the head is not taken from this file (``merge_pretrained``
    keeps it freshly initialised).

    Returns:
      ``path`` (an .npz of ``models.convert.save_variables``).
    """
    model = trainer.create_model(config)  # config.method and its options included
    shape = tuple(int(s) for s in config.image_size) + (1 if config.model == "digits_cnn" else 3,)
    variables = ts.init_variables(model, jax.random.PRNGKey(int(seed)), shape)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(jax.device_get(variables)))
    rng = np.random.default_rng(int(seed))
    for key, value in flat.items():
        value = np.asarray(value)
        if key[-1] == "kernel" and value.ndim == 4:
            fan_in = value.shape[0] * value.shape[1] * value.shape[2]
            value = rng.standard_normal(value.shape) * np.sqrt(gain / fan_in)
        flat[key] = value.astype(np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    convert.save_variables(flax.traverse_util.unflatten_dict(flat), path)
    return path


def write_checkpoint_init(source_run: str, path: str) -> str:
    """Writes the best checkpoint of another run (e.g. a §3.3 model) as ``config.pretrained``.

    Used to start the single-label benchmark from digit features learnt on MNIST-train
    canvases (the head is re-initialised by ``merge_pretrained``), as the paper starts its
    WSOL models from ImageNet weights.

    Returns:
      ``path`` (an .npz of ``models.convert.save_variables``).
    """
    variables, _ = checkpoints.restore_variables_from(source_run, "best")
    variables = {k: v for k, v in variables.items() if k == "params" or v}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    convert.save_variables(variables, path)
    return path


def kinds_for_radius(map_kinds: Sequence[str], region_size: int, main_region_size: int):
    """Map kinds to evaluate at ``region_size``: all at the main R, the R-dependent ones else."""
    if region_size == main_region_size:
        return tuple(map_kinds)
    return tuple(k for k in map_kinds if k != "cam")


def load_split(config, split: str) -> list[dict[str, np.ndarray]]:
    """All eval batches of ``split`` (fixed order, last one padded), kept in memory."""
    it = data.make_iterator(config, split, training=False, batch_size=int(config.eval_batch_size))
    return [{k: np.asarray(v) for k, v in b.items()} for b in it]


def evaluate_checkpoint(config, model, variables, split_batches, *,
                        region_sizes: Sequence[int], main_region_size: int,
                        map_kinds: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Results of one checkpoint: ``{split: {str(R): results}}`` for every split and R."""
    out = {}
    for split, batches in split_batches.items():
        out[split] = {}
        for r in region_sizes:
            kinds = kinds_for_radius(map_kinds, r, main_region_size)
            if not kinds:
                continue
            settings = EvalSettings.from_config(config, region_size=int(r), map_kinds=kinds)
            out[split][str(r)] = region_grid.run(settings, model, variables, batches)
    return out


def make_figure(config, model, variables, batches, path: str, *, digit: int | None = 0,
                num_images: int = 8, map_kinds: Sequence[str] = ("cam", "infocam")) -> list[int]:
    """PNG like the paper's Figure 4: the image, then CAM / infoCAM overlays of one class.

    Multi-label: the first ``num_images`` canvases holding ``digit``, maps of ``digit``, red
    boxes = that digit's ground truth. Single-label (``digit=None``): the first images, maps of
    their ground-truth class. Green boxes: each map's box at ``config.cam_threshold``.

    Returns:
      the canvas indices (positions in the split) drawn.
    """
    settings = EvalSettings.from_config(config, map_kinds=tuple(map_kinds))
    picked, index = [], 0
    for b in batches:
        for i in range(len(b["valid"])):
            if b["valid"][i] and (digit is None or b["labels"][i, digit] > 0.5):
                picked.append((index, {k: np.asarray(v)[i] for k, v in b.items()}))
            index += 1
    picked = picked[:num_images]
    if not picked:
        raise ValueError(f"no image of class {digit} in the split")
    batch = {k: np.stack([p[1][k] for p in picked]) for k in picked[0][1]}
    labels = (np.full(len(picked), digit, np.int32) if digit is not None
              else batch["label"].astype(np.int32))
    figures.draw_model_maps(settings, model, variables, batch, labels, path,
                              label_boxes_only=digit is not None)
    return [p[0] for p in picked]


def _threshold_results(model, config, head, seed, run_dir, split_batches, plan, reevaluate,
                       cache, log):
    """Threshold sweep of one run (multi-label: the (map, R) x threshold grid), cached in
    ``<run>/reproduce_thresholds.json``; returns its flat values."""
    thresholds, region_sizes = plan.cam_thresholds, plan.region_sizes
    path = os.path.join(run_dir, "reproduce_thresholds.json")
    kinds_r = [("cam", 1)] + [("infocam", int(r)) for r in region_sizes]
    want = {"thresholds": [float(t) for t in thresholds], "kinds_r": [list(k) for k in kinds_r]}
    sweep = None
    if os.path.exists(path) and not reevaluate:
        sweep = json_files.read_json(path)
        if any(sweep.get(k) != v for k, v in want.items()):
            sweep = None
    if sweep is None:
        variables, _ = trainer.restore_variables(training_config(config, head, seed), run_dir,
                                               "best")
        t0 = time.time()
        if plan.multi:
            if "step" not in cache:
                cache["step"] = region_grid.make_multilabel_grid_step(
                    EvalSettings.from_config(config), model, kinds_r=kinds_r,
                    thresholds=thresholds)
            results = {split: region_grid.multilabel_grid(cache["step"], variables, batches,
                                                          kinds_r=kinds_r, thresholds=thresholds)
                       for split, batches in split_batches.items()}
        else:
            results = json_files.json_clean(region_grid.threshold_sweep(
                config, model, variables, split_batches, thresholds=thresholds,
                region_size=plan.main_r, map_kinds=plan.map_kinds))
        sweep = dict(want, results=results)
        json_files.write_json(sweep, path)
        log(f"[{head} seed {seed}] threshold sweep in {time.time() - t0:.0f}s")
    if plan.multi:
        return region_grid.flatten_grid(sweep["results"], ("cam", "infocam"))
    return region_grid.flatten_sweep(sweep["results"], plan.map_kinds, "gt_known_loc")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The resolved arguments of :func:`reproduce`."""
    multi: bool
    main_r: int
    region_sizes: list[int]
    map_kinds: tuple[str, ...]
    heads: tuple[str, ...]
    seeds: tuple[int, ...]
    cam_thresholds: list[float]
    eval_splits: tuple[str, ...]
    readings: bool


def _resolve(config, *, seeds, region_sizes, map_kinds, heads, eval_splits, cam_thresholds,
             readings) -> _Plan:
    """Defaults and checks of :func:`reproduce`'s arguments."""
    multi = bool(config.multi_label)
    main_r = int(config.region_size)
    eval_splits = tuple(eval_splits)
    if "test" not in eval_splits or any(s not in SPLITS for s in eval_splits):
        raise ValueError(f"eval_splits must include 'test' and be among {SPLITS}, "
                         f"got {eval_splits}")
    return _Plan(
        multi=multi, main_r=main_r,
        region_sizes=sorted({int(r) for r in region_sizes} | {main_r}),
        map_kinds=tuple(map_kinds or (MULTI_LABEL_MAP_KINDS if multi else CAM_FAMILY_KINDS)),
        heads=tuple(heads or heads_of(config)), seeds=tuple(int(s) for s in seeds),
        cam_thresholds=sorted(float(t) for t in (cam_thresholds or ())),
        eval_splits=eval_splits, readings=bool(readings) and "validation" in eval_splits)


def _initial_weights(sub, seed: int, run_dir: str, *, init_from: str, fan_in_init: bool,
                     log) -> None:
    """Sets ``sub.pretrained`` for ``init_from`` (waiting for that run to finish) or
    ``fan_in_init``; leaves it unchanged otherwise."""
    if init_from:
        # The source run must be finished (its best epoch final): wait for it.
        done = os.path.join(init_from, f"seed{seed}", "reproduce_eval.json")
        while not os.path.exists(done):
            log(f"[{sub.loss} seed {seed}] waiting for {done}")
            time.sleep(30)
        sub.pretrained = write_checkpoint_init(os.path.join(init_from, f"seed{seed}"),
                                               os.path.join(run_dir, f"init_from_seed{seed}.npz"))
    elif fan_in_init and not sub.pretrained:
        sub.pretrained = write_fan_in_init(
            sub, seed, os.path.join(run_dir, f"init_fan_in_seed{seed}.npz"))


def _trained_record(config, model, plan: _Plan, head: str, seed: int, run_dir: str,
                    split_batches, *, reevaluate: bool, init_from: str, fan_in_init: bool,
                    log) -> dict:
    """Trains one (head, seed) and evaluates its best checkpoint at every R on every split,
    or reuses ``<run>/reproduce_eval.json``; returns that record."""
    eval_path = os.path.join(run_dir, "reproduce_eval.json")
    if os.path.exists(eval_path) and not reevaluate:
        log(f"[{head} seed {seed}] reusing {eval_path}")
        return json_files.read_json(eval_path)
    sub = training_config(config, head, seed)
    _initial_weights(sub, seed, run_dir, init_from=init_from, fan_in_init=fan_in_init, log=log)
    t0 = time.time()
    training.train_and_evaluate(sub, run_dir)
    train_s = time.time() - t0
    variables, extra = trainer.restore_variables(sub, run_dir, "best")
    t0 = time.time()
    # Multi-label with a threshold grid: the grid covers every R in one compile.
    eval_rs = [plan.main_r] if (plan.multi and plan.cam_thresholds) else plan.region_sizes
    results = evaluate_checkpoint(config, model, variables, split_batches, region_sizes=eval_rs,
                                  main_region_size=plan.main_r, map_kinds=plan.map_kinds)
    eval_s = time.time() - t0
    record = {"head": head, "seed": int(seed), "train_seconds": train_s, "eval_seconds": eval_s,
              "best_epoch": int(extra["epoch"]), "best_val_accuracy": extra.get("val_accuracy"),
              "results": json_files.json_clean(results)}
    json_files.write_json(record, eval_path)
    log(f"[{head} seed {seed}] trained in {train_s:.0f}s (best epoch {record['best_epoch']}), "
        f"evaluated in {eval_s:.0f}s")
    return record


def _run_flat(config, model, plan: _Plan, record: dict, run_dir: str, split_batches, *,
              reevaluate: bool, grid_cache: dict, log) -> dict[str, float]:
    """One run's flat scalars: every split and R, the threshold sweep (when asked), the
    readings (``readings/`` + ``readings_table`` keys) and its timing."""
    head, seed = record["head"], record["seed"]
    results = {s: {r: {k: (float("nan") if v is None else v) for k, v in res.items()}
                   for r, res in per_r.items()}
               for s, per_r in record["results"].items()}
    flat = seed_tables.flatten(results, plan.main_r)
    if plan.multi:
        for s in plan.eval_splits:
            flat[f"{s}/infocam_minus_cam/loc_acc"] = (flat[f"{s}/infocam/loc_acc"]
                                                     - flat[f"{s}/cam/loc_acc"])
    if plan.cam_thresholds:
        flat.update(_threshold_results(model, config, head, seed, run_dir, split_batches, plan,
                                       reevaluate, grid_cache, log))
        t_main = f"{float(config.cam_threshold):g}"
        for s in plan.eval_splits:
            for r in plan.region_sizes:
                key = f"{s}/t{t_main}/R{r}/infocam/loc_acc"
                if plan.multi and key in flat:
                    flat.setdefault(f"{s}/R{r}/infocam/loc_acc", flat[key])
    if plan.readings:
        sub = training_config(config, head, seed)
        values = rd.cached_flat(
            config, model, lambda: trainer.restore_variables(sub, run_dir, "best")[0],
            split_batches, os.path.join(run_dir, "reproduce_readings.json"),
            reevaluate=reevaluate, map_kinds=MULTI_LABEL_MAP_KINDS)
        flat.update({f"readings/{k}": v for k, v in values.items()})
    for key in ("train_seconds", "eval_seconds", "best_epoch"):
        flat[key] = record[key]
    return flat


def _report(config, plan: _Plan, aggs, baselines, timing, wall: float) -> str:
    """The Markdown of ``summary.md`` (without its title)."""
    if plan.multi:
        report = seed_tables.multi_label_report(aggs, baselines, plan.region_sizes, plan.main_r)
    else:
        report = seed_tables.single_label_report(aggs, baselines, plan.region_sizes,
                                                 plan.main_r, plan.map_kinds)
    if plan.readings:
        settings = EvalSettings.from_config(config, map_kinds=MULTI_LABEL_MAP_KINDS)
        report += ("\nCAM vs infoCAM under every reading of the maps:\n\n"
                   + readings_table.render(aggs, settings, plan.seeds, prefix="readings/"))
    if plan.cam_thresholds and plan.multi:
        report += seed_tables.grid_report(aggs, plan.cam_thresholds, plan.region_sizes)
    elif plan.cam_thresholds:
        report += seed_tables.threshold_report(aggs, plan.cam_thresholds, plan.map_kinds,
                                               "gt_known_loc")
    report += ("\nWall-clock of this invocation: "
               f"{wall:.0f} s (runs reused from earlier invocations cost nothing here); "
               "per head, training / evaluation seconds summed over seeds: "
               + "; ".join(f"{h} {t['train_seconds_total']:.0f} / {t['eval_seconds_total']:.0f}"
                           for h, t in timing.items()) + ".\n")
    return seed_tables.reading_line(str(config.get("normalize", "minmax")),
                                    float(config.cam_threshold),
                                    float(config.iou_threshold)) + "\n\n" + report


def _figure(config, model, plan: _Plan, workdir: str, split_batches, figure: str,
            figure_digit: int, log) -> None:
    """Draws the Figure-4-style grid of the first head's first seed to ``figure``."""
    first = os.path.join(workdir, plan.heads[0], f"seed{plan.seeds[0]}")
    variables, _ = trainer.restore_variables(training_config(config, plan.heads[0],
                                                           plan.seeds[0]), first, "best")
    drawn = make_figure(config, model, variables, split_batches["test"], figure,
                        digit=figure_digit if plan.multi else None,
                        map_kinds=(plan.map_kinds[:2] if plan.multi
                                   else ("cam", "infocam", "infocam_plus")))
    log(f"wrote {figure} (test canvases {drawn})")


def _write_summary(config, plan: _Plan, workdir: str, report: str, **fields) -> dict:
    """Writes ``<workdir>/summary.{json,md}``; returns the JSON dict."""
    out = {"dataset": str(config.dataset), "heads": list(plan.heads), "seeds": list(plan.seeds),
           "region_sizes": plan.region_sizes, "main_region_size": plan.main_r,
           "map_kinds": list(plan.map_kinds), **fields,
           "normalize": str(config.get("normalize", "minmax")),
           "config": json.loads(config.to_json_best_effort())}
    json_files.write_json(out, os.path.join(workdir, "summary.json"))
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(f"# {config.dataset}: {', '.join(plan.heads)}; seeds {list(plan.seeds)}\n\n"
                f"{report}")
    return out


def reproduce(config, workdir: str, *, seeds: Sequence[int], region_sizes: Sequence[int],
              map_kinds: Sequence[str] | None = None, baseline_draws: int = 10,
              figure: str = "", figure_digit: int = 0, reevaluate: bool = False,
              fan_in_init: bool = False, heads: Sequence[str] | None = None,
              eval_splits: Sequence[str] = SPLITS, init_from: str = "",
              cam_thresholds: Sequence[float] = (), readings: bool = True,
              log=print) -> dict:
    """Trains every (head, seed), evaluates at every R on validation and test, aggregates.

    Args:
      config: experiment ConfigDict (``config.heads`` or ``config.loss`` gives the heads).
      workdir: output root; runs in ``<workdir>/<head>/seed<k>``.
      seeds: training seeds.
      region_sizes: infoCAM R values to evaluate (``config.region_size`` is always included and
        is the main one).
      map_kinds: map kinds (default: CAM and infoCAM for multi-label sets, plus both infoCAM+
        rivals for single-label ones).
      baseline_draws: random boxes per ground-truth box for the random-box baseline.
      figure: PNG path of a Figure-4-style grid from the first head's first seed ("" = none).
      figure_digit: multi-label sets: the digit whose maps the figure shows.
      reevaluate: evaluate again even when a run's ``reproduce_eval.json`` exists.
      heads: losses to train (default: :func:`heads_of`).
      eval_splits: splits of the full evaluation (the R ablation reads validation and test).
      init_from: a directory holding ``seed<k>/`` training runs (e.g.
        ``<multi_mnist workdir>/pc_sigmoid``): seed k starts from that run's best checkpoint.
      cam_thresholds: when given, also evaluate (at the main R) localisation at each of these
        score thresholds, on every split, and report the test value at the threshold chosen
        on validation (``<run>/reproduce_thresholds.json``).
      readings: also read CAM and infoCAM (main R) under both normalisations with thresholds
        chosen on validation (``evaluation.readings``; ``<run>/reproduce_readings.json``).
      fan_in_init: start from :func:`write_fan_in_init` weights (when ``config.pretrained``
        is empty); False keeps the model's own initialisation.
      log: progress printer.

    A config listing ``methods`` (WSOL methods, e.g. configs/methods_cluttered.py) is refused
    here: its driver is ``methods_table.reproduce_methods`` (``infocam-reproduce`` picks it).

    Returns:
      the summary dict written to ``<workdir>/summary.json``.
    """
    if tuple(config.get("methods", ()) or ()):
        raise ValueError(f"config.methods={tuple(config.methods)} lists WSOL methods: their "
                         f"driver is methods_table.reproduce_methods (infocam-reproduce picks it)")
    plan = _resolve(config, seeds=seeds, region_sizes=region_sizes, map_kinds=map_kinds,
                    heads=heads, eval_splits=eval_splits, cam_thresholds=cam_thresholds,
                    readings=readings)
    # The config (method and backbone included) is checked before anything is written.
    config_lib.validate(config)
    model = trainer.create_model(config)
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    split_batches = {s: load_split(config, s) for s in plan.eval_splits}
    log(f"loaded {({s: sum(int(np.sum(b['valid'])) for b in bs) for s, bs in split_batches.items()})}"
        f" evaluation examples in {time.time() - t_start:.1f}s")
    runs, per_head, grid_cache = {}, {}, {}
    for head in plan.heads:
        per_head[head] = []
        for seed in plan.seeds:
            run_dir = os.path.join(workdir, head, f"seed{seed}")
            record = _trained_record(config, model, plan, head, seed, run_dir, split_batches,
                                     reevaluate=reevaluate, init_from=init_from,
                                     fan_in_init=fan_in_init, log=log)
            per_head[head].append(_run_flat(config, model, plan, record, run_dir,
                                            split_batches, reevaluate=reevaluate,
                                            grid_cache=grid_cache, log=log))
            runs[f"{head}/seed{seed}"] = record
    aggs = {h: seed_tables.aggregate(v) for h, v in per_head.items()}
    baselines = ref.baseline_accuracies(ref.split_gt_boxes(split_batches["test"]),
                                        tuple(config.image_size),
                                        iou_threshold=float(config.iou_threshold),
                                        draws=baseline_draws, half_canvas=plan.multi)
    timing = {h: {"train_seconds_total": float(sum(r["train_seconds"] for r in v)),
                  "eval_seconds_total": float(sum(r["eval_seconds"] for r in v))}
              for h, v in per_head.items()}
    if figure:
        _figure(config, model, plan, workdir, split_batches, figure, figure_digit, log)
    wall = time.time() - t_start
    report = _report(config, plan, aggs, baselines, timing, wall)
    out = _write_summary(config, plan, workdir, report, baselines=baselines, aggregate=aggs,
                         timing=timing, wall_seconds=wall, runs=runs)
    log("\n" + report)
    return out
