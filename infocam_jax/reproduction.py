"""Reproduction driver: one experiment config over several seeds and heads, evaluated at several
infoCAM region sizes (and score thresholds), aggregated into ``summary.{md,json}``.

Layout: one training run per (head, seed) in ``<workdir>/<head>/seed<k>/`` through
``train.train_and_evaluate`` (restartable: a finished run is not retrained), then the best
checkpoint by validation top-1 classification accuracy (the paper's model selection; nothing is
selected on the test split) is evaluated on the validation and the test split with the full
protocol, and ``<workdir>/summary.{md,json}`` gather every seed and the mean ± sample standard
deviation (ddof=1) over seeds.

Why a separate full evaluation: during training, the per-epoch validation pass only serves model
selection (top-1 classification), so the training runs evaluate CAM only with a one-point
threshold grid (``map_kinds=("cam",)``, ``num_box_thresholds=1``: the localisation numbers in
each run's own ``results.*`` are therefore not the reported ones). The reported numbers come from
the cached eval step (``evaluation.step``), compiled once per settings and reused across seeds,
heads and splits, so a region-size ablation costs one forward pass per R and no retraining.
Maps become boxes under ``config.normalize`` (every report says which).

Metrics: ``infocam_jax.evaluation``; input-blind baselines: ``evaluation.baselines``; tables:
``evaluation.summary``. The launcher is ``launch/reproduce.py``.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import jax
import numpy as np

from infocam_jax.evaluation import baselines as ref
from infocam_jax.evaluation import common, region_grid, summary
from infocam_jax.evaluation import readings as rd
from infocam_jax.evaluation.settings import EvalSettings

SPLITS = ("validation", "test")
MULTI_LABEL_KINDS = ("cam", "infocam")
SINGLE_LABEL_KINDS = ("cam", "infocam", "infocam_plus", "infocam_plus_region")


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
    import ml_collections  # pylint: disable=import-outside-toplevel
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.loss = str(head)
    sub.heads = ()
    sub.seed = int(seed)
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
    import flax  # pylint: disable=import-outside-toplevel
    from infocam_jax import train_state as ts  # pylint: disable=import-outside-toplevel
    from infocam_jax import train  # pylint: disable=import-outside-toplevel
    from infocam_jax.models import convert  # pylint: disable=import-outside-toplevel
    model = train.create_model(config)  # config.method and its options included
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
    from infocam_jax import checkpointing  # pylint: disable=import-outside-toplevel
    from infocam_jax.models import convert  # pylint: disable=import-outside-toplevel
    variables, _ = checkpointing.restore_variables_from(source_run, "best")
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
    from infocam_jax import data  # pylint: disable=import-outside-toplevel
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
    from infocam_jax import visualize  # pylint: disable=import-outside-toplevel
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
    visualize.draw_model_maps(settings, model, variables, batch, labels, path,
                              label_boxes_only=digit is not None)
    return [p[0] for p in picked]


def _threshold_results(model, config, head, seed, run_dir, split_batches, thresholds,
                       region_sizes, main_r, map_kinds, multi, reevaluate, cache, log):
    """Threshold sweep of one run (multi-label: the (map, R) x threshold grid), cached in
    ``<run>/reproduce_thresholds.json``; returns its flat values."""
    from infocam_jax import train  # pylint: disable=import-outside-toplevel
    path = os.path.join(run_dir, "reproduce_thresholds.json")
    kinds_r = [("cam", 1)] + [("infocam", int(r)) for r in region_sizes]
    want = {"thresholds": [float(t) for t in thresholds], "kinds_r": [list(k) for k in kinds_r]}
    sweep = None
    if os.path.exists(path) and not reevaluate:
        with open(path) as f:
            sweep = json.load(f)
        if any(sweep.get(k) != v for k, v in want.items()):
            sweep = None
    if sweep is None:
        variables, _ = train.restore_variables(training_config(config, head, seed), run_dir,
                                               "best")
        t0 = time.time()
        if multi:
            if "step" not in cache:
                cache["step"] = region_grid.make_multilabel_grid_step(
                    EvalSettings.from_config(config), model, kinds_r=kinds_r,
                    thresholds=thresholds)
            results = {split: region_grid.multilabel_grid(cache["step"], variables, batches,
                                              kinds_r=kinds_r, thresholds=thresholds)
                       for split, batches in split_batches.items()}
        else:
            results = common.json_clean(region_grid.threshold_sweep(
                config, model, variables, split_batches, thresholds=thresholds,
                region_size=main_r, map_kinds=map_kinds))
        sweep = dict(want, results=results)
        common.write_json(sweep, path)
        log(f"[{head} seed {seed}] threshold sweep in {time.time() - t0:.0f}s")
    if multi:
        return region_grid.flatten_grid(sweep["results"], ("cam", "infocam"))
    return region_grid.flatten_sweep(sweep["results"], map_kinds, "gt_known_loc")


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

    A config listing ``methods`` (WSOL methods, e.g. configs/methods_cluttered.py) is handed to
    ``methods_table.reproduce_methods`` instead (``seeds``, ``reevaluate`` and ``log`` apply;
    the method x map-kind table under MaxBoxAccV2 with thresholds chosen on validation).

    Returns:
      the summary dict written to ``<workdir>/summary.json``.
    """
    from infocam_jax import train  # pylint: disable=import-outside-toplevel
    if tuple(config.get("methods", ()) or ()):
        # One config, several WSOL methods: the method x map-kind table.
        from infocam_jax import methods_table  # pylint: disable=import-outside-toplevel
        return methods_table.reproduce_methods(config, workdir, seeds=seeds,
                                               reevaluate=reevaluate, log=log)
    multi = bool(config.multi_label)
    main_r = int(config.region_size)
    region_sizes = sorted({int(r) for r in region_sizes} | {main_r})
    map_kinds = tuple(map_kinds or (MULTI_LABEL_KINDS if multi else SINGLE_LABEL_KINDS))
    heads = tuple(heads or heads_of(config))
    cam_thresholds = sorted(float(t) for t in (cam_thresholds or ()))
    sweep_metric = "loc_acc" if multi else "gt_known_loc"
    grid_cache = {}
    eval_splits = tuple(eval_splits)
    if "test" not in eval_splits or any(s not in SPLITS for s in eval_splits):
        raise ValueError(f"eval_splits must include 'test' and be among {SPLITS}, "
                         f"got {eval_splits}")
    # The config (method and backbone included) is checked before anything is written.
    model = train.create_model(config)
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    t0 = time.time()
    split_batches = {s: load_split(config, s) for s in eval_splits}
    counts = {s: sum(int(np.sum(b["valid"])) for b in bs) for s, bs in split_batches.items()}
    log(f"loaded {counts} evaluation examples in {time.time() - t0:.1f}s")
    runs, per_head = {}, {}
    for head in heads:
        per_head[head] = []
        for seed in seeds:
            run_dir = os.path.join(workdir, head, f"seed{seed}")
            eval_path = os.path.join(run_dir, "reproduce_eval.json")
            if os.path.exists(eval_path) and not reevaluate:
                with open(eval_path) as f:
                    record = json.load(f)
                log(f"[{head} seed {seed}] reusing {eval_path}")
            else:
                sub = training_config(config, head, seed)
                if init_from:
                    # The source run must be finished (its best epoch final): wait for it.
                    done = os.path.join(init_from, f"seed{seed}", "reproduce_eval.json")
                    while not os.path.exists(done):
                        log(f"[{head} seed {seed}] waiting for {done}")
                        time.sleep(30)
                    sub.pretrained = write_checkpoint_init(
                        os.path.join(init_from, f"seed{seed}"),
                        os.path.join(run_dir, f"init_from_seed{seed}.npz"))
                elif fan_in_init and not sub.pretrained:
                    sub.pretrained = write_fan_in_init(
                        sub, seed, os.path.join(run_dir, f"init_fan_in_seed{seed}.npz"))
                t0 = time.time()
                train.train_and_evaluate(sub, run_dir)
                train_s = time.time() - t0
                variables, extra = train.restore_variables(sub, run_dir, "best")
                t0 = time.time()
                # Multi-label with a threshold grid: the grid covers every R in one compile.
                eval_rs = [main_r] if (multi and cam_thresholds) else region_sizes
                results = evaluate_checkpoint(config, model, variables, split_batches,
                                              region_sizes=eval_rs, main_region_size=main_r,
                                              map_kinds=map_kinds)
                eval_s = time.time() - t0
                record = {"head": head, "seed": int(seed), "train_seconds": train_s,
                          "eval_seconds": eval_s, "best_epoch": int(extra["epoch"]),
                          "best_val_accuracy": extra.get("val_accuracy"),
                          "results": common.json_clean(results)}
                common.write_json(record, eval_path)
                log(f"[{head} seed {seed}] trained in {train_s:.0f}s (best epoch "
                    f"{record['best_epoch']}), evaluated in {eval_s:.0f}s")
            results = {s: {r: {k: (float("nan") if v is None else v) for k, v in res.items()}
                           for r, res in per_r.items()}
                       for s, per_r in record["results"].items()}
            flat = summary.flatten(results, main_r)
            for s in eval_splits:
                if multi:
                    flat[f"{s}/infocam_minus_cam/loc_acc"] = (flat[f"{s}/infocam/loc_acc"]
                                                             - flat[f"{s}/cam/loc_acc"])
            if cam_thresholds:
                flat.update(_threshold_results(
                    model, config, head, seed, run_dir, split_batches, cam_thresholds,
                    region_sizes, main_r, map_kinds, multi, reevaluate, grid_cache, log))
                t_main = f"{float(config.cam_threshold):g}"
                for s_ in eval_splits:
                    for r in region_sizes:
                        key = f"{s_}/t{t_main}/R{r}/infocam/loc_acc"
                        if multi and key in flat:
                            flat.setdefault(f"{s_}/R{r}/infocam/loc_acc", flat[key])
            if readings and "validation" in split_batches:
                sub = training_config(config, head, seed)
                flat.update(rd.cached_flat(
                    config, model, lambda: train.restore_variables(sub, run_dir, "best")[0],
                    split_batches, os.path.join(run_dir, "reproduce_readings.json"),
                    reevaluate=reevaluate, map_kinds=MULTI_LABEL_KINDS))
            flat["train_seconds"] = record["train_seconds"]
            flat["eval_seconds"] = record["eval_seconds"]
            flat["best_epoch"] = record["best_epoch"]
            per_head[head].append(flat)
            runs[f"{head}/seed{seed}"] = record
    aggs = {h: summary.aggregate(v) for h, v in per_head.items()}
    baselines = ref.baseline_accuracies(ref.split_gt_boxes(split_batches["test"]),
                                    tuple(config.image_size),
                                    iou_threshold=float(config.iou_threshold),
                                    draws=baseline_draws, half_canvas=multi)
    if multi:
        report = summary.multi_label_report(aggs, baselines, region_sizes, main_r)
    else:
        report = summary.single_label_report(aggs, baselines, region_sizes, main_r, map_kinds)
    if readings and "validation" in split_batches:
        report += summary.readings_report(aggs, "loc_acc" if multi else "gt_known_loc",
                                          float(config.cam_threshold))
    if cam_thresholds and multi:
        report += summary.grid_report(aggs, cam_thresholds, region_sizes)
    elif cam_thresholds:
        report += summary.threshold_report(aggs, cam_thresholds, map_kinds, sweep_metric)
    timing = {h: {"train_seconds_total": float(sum(r["train_seconds"] for r in v)),
                  "eval_seconds_total": float(sum(r["eval_seconds"] for r in v))}
              for h, v in per_head.items()}
    if figure:
        first = os.path.join(workdir, heads[0], f"seed{seeds[0]}")
        variables, _ = train.restore_variables(training_config(config, heads[0], seeds[0]),
                                               first, "best")
        drawn = make_figure(config, model, variables, split_batches["test"], figure,
                            digit=figure_digit if multi else None,
                            map_kinds=map_kinds[:2] if multi else ("cam", "infocam",
                                                                    "infocam_plus"))
        log(f"wrote {figure} (test canvases {drawn})")
    wall = time.time() - t_start
    report += ("\nWall-clock of this invocation: "
               f"{wall:.0f} s (runs reused from earlier invocations cost nothing here); "
               "per head, training / evaluation seconds summed over seeds: "
               + "; ".join(f"{h} {t['train_seconds_total']:.0f} / {t['eval_seconds_total']:.0f}"
                           for h, t in timing.items()) + ".\n")
    report = summary.reading_line(str(config.get("normalize", "minmax")),
                                  float(config.cam_threshold),
                                  float(config.iou_threshold)) + "\n\n" + report
    out = {"dataset": str(config.dataset), "heads": list(heads), "seeds": list(seeds),
               "region_sizes": region_sizes, "main_region_size": main_r,
               "map_kinds": list(map_kinds), "baselines": baselines, "aggregate": aggs,
               "timing": timing, "wall_seconds": wall, "runs": runs,
               "normalize": str(config.get("normalize", "minmax")),
               "config": json.loads(config.to_json_best_effort())}
    common.write_json(out, os.path.join(workdir, "summary.json"))
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(f"# {config.dataset}: {', '.join(heads)}; seeds {list(seeds)}\n\n{report}")
    log("\n" + report)
    return out
