r"""Runs one experiment config over several seeds (and heads), evaluates every trained model at
several infoCAM region sizes, and aggregates mean ± std over seeds into Markdown and JSON.

  python launch/reproduce.py --config=configs/multi_mnist.py --workdir=workdirs/repro/multi_mnist \
      --seeds=0,1,2 --region_sizes=1,2,3,4,5
  python launch/reproduce.py --config=configs/cluttered_mnist.py \
      --workdir=workdirs/repro/cluttered_mnist --seeds=0,1,2

Layout: one training run per (head, seed) in ``<workdir>/<head>/seed<k>/`` through
``train.train_and_evaluate`` (restartable: a finished run is not retrained), then the best
checkpoint by validation top-1 classification accuracy (the paper's model selection; nothing is
selected on the test split) is evaluated on the validation and the test split with the full
protocol, and ``<workdir>/summary.{md,json}`` gather every seed and the mean ± sample standard
deviation (ddof=1) over seeds.

Why a separate full evaluation: during training, the per-epoch validation pass only serves model
selection (top-1 classification), so the training runs evaluate CAM only with a one-point
MaxBoxAcc grid (``map_kinds=("cam",)``, ``num_box_thresholds=1``: the localisation numbers in
each run's own ``results.*`` are therefore not the reported ones). The reported numbers come from
one compiled eval step per (settings) that is reused across seeds, heads and splits, so a
region-size ablation costs one forward pass per R and no retraining.

Metrics (fractions in [0, 1] in the JSON, percentages in the Markdown) are those of
``infocam_jax.evaluate`` / ``infocam_jax.metrics``; the reference baselines are computed here:

* random box: for every valid ground-truth box, a box with ``x0 <= x1`` drawn as two independent
  uniform integer columns in ``[0, W-1]`` (sorted) and likewise for the rows; a hit when its
  inclusive-pixel IoU with that ground-truth box is >= ``config.iou_threshold``; averaged over
  ``--baseline_draws`` draws (seed 0);
* full-image box ``(0, 0, W-1, H-1)``;
* half-canvas box (multi-label double-digit canvases only): the 28x28 half of the canvas that
  holds the digit, i.e. what a model that only knows on which side the digit is would output.
"""
from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

SPLITS = ("validation", "test")
MULTI_LABEL_KINDS = ("cam", "infocam")
SINGLE_LABEL_KINDS = ("cam", "infocam", "infocam_plus", "infocam_plus_region")
# R-independent result keys are taken from the main region size only.
_SINGLE_METRICS = ("gt_known_loc", "top1_loc", "max_box_acc", "max_box_acc_v2")
DISPLAY = {"cam": "CAM", "infocam": "infoCAM", "infocam_plus": "infoCAM+ (image rival)",
           "infocam_plus_region": "infoCAM+ (region rival)", "sigmoid": "sigmoid",
           "pc_sigmoid": "PC-sigmoid", "softmax": "softmax", "pc_softmax": "PC-softmax"}


# ----------------------------------------------------------------------------- configs

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
    import jax  # pylint: disable=import-outside-toplevel
    from infocam_jax import train_state as ts  # pylint: disable=import-outside-toplevel
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    from infocam_jax.models import convert  # pylint: disable=import-outside-toplevel
    model = models.create(config.model, int(config.num_classes), **dict(config.model_options))
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


# ----------------------------------------------------------------------------- evaluation

class CachedEvaluator:
    """Full-protocol evaluation with one compiled step per ``EvalSettings``.

    ``evaluate.evaluate`` builds a new ``jax.pmap`` per call (hence a recompilation per call);
    here the pmapped step of each settings is kept, so evaluating many checkpoints of one
    architecture (seeds, heads) at many region sizes compiles once per region size.
    """

    def __init__(self, config, model, num_devices: int | None = None):
        import jax  # pylint: disable=import-outside-toplevel
        self.config = config
        self.model = model
        self.num_devices = int(num_devices or jax.local_device_count())
        self._steps: dict[Any, Any] = {}

    def settings(self, **overrides):
        from infocam_jax import evaluate  # pylint: disable=import-outside-toplevel
        return evaluate.EvalSettings.from_config(self.config, **overrides)

    def _step(self, settings):
        from infocam_jax import evaluate  # pylint: disable=import-outside-toplevel
        if settings not in self._steps:
            self._steps[settings] = evaluate.make_eval_step(settings, self.model,
                                                            num_devices=self.num_devices)
        return self._steps[settings]

    def run(self, settings, variables, batches: Iterable[Mapping[str, np.ndarray]]
            ) -> dict[str, float]:
        """Evaluates ``variables`` over ``batches`` (docs/interfaces.md dicts) with ``settings``.

        Returns:
          ``evaluate.finalize`` results: flat dict of floats, fractions in [0, 1].
        """
        import jax  # pylint: disable=import-outside-toplevel
        from infocam_jax import evaluate  # pylint: disable=import-outside-toplevel
        step = self._step(settings)
        n = self.num_devices
        p_vars = evaluate.replicate(variables, n)
        p_counts = evaluate.replicate(evaluate.init_counts(settings), n)
        size = None
        for batch in batches:
            b = len(batch["valid"])
            if size is None:
                size = -(-b // n) * n
            if b > size:
                raise ValueError(f"a batch has {b} examples, more than the first one's {size}")
            sharded = {k: v.reshape((n, size // n) + v.shape[1:])
                       for k, v in pad_batch(batch, size).items()}
            p_counts = step(p_vars, sharded, p_counts)
        if size is None:
            raise ValueError("the evaluation iterator yielded no batch")
        counts = jax.tree_util.tree_map(lambda x: np.asarray(x).sum(0), p_counts)
        return evaluate.finalize(settings, counts)


def pad_batch(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads every array's leading axis with zeros to ``size`` (``valid`` is False there)."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.shape[0] < size:
            pad = np.zeros((size - value.shape[0],) + value.shape[1:], value.dtype)
            value = np.concatenate([value, pad])
        out[key] = value
    return out


def load_split(config, split: str) -> list[dict[str, np.ndarray]]:
    """All eval batches of ``split`` (fixed order, last one padded), kept in memory."""
    from infocam_jax import data  # pylint: disable=import-outside-toplevel
    it = data.make_iterator(config, split, training=False, batch_size=int(config.eval_batch_size))
    return [{k: np.asarray(v) for k, v in b.items()} for b in it]


def evaluate_checkpoint(evaluator: CachedEvaluator, variables, split_batches, *,
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
            settings = evaluator.settings(region_size=int(r), map_kinds=kinds)
            out[split][str(r)] = evaluator.run(settings, variables, batches)
    return out


def threshold_sweep(evaluator: CachedEvaluator, variables, split_batches, *,
                    thresholds: Sequence[float], region_size: int, map_kinds: Sequence[str]
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """Results at several CAM score thresholds: ``{split: {str(t): results}}`` (one R)."""
    out = {}
    for split, batches in split_batches.items():
        out[split] = {}
        for t in thresholds:
            settings = evaluator.settings(region_size=int(region_size),
                                          map_kinds=tuple(map_kinds), cam_threshold=float(t))
            out[split][f"{float(t):g}"] = evaluator.run(settings, variables, batches)
    return out


def make_multilabel_grid_step(model, *, kinds_r: Sequence[tuple[str, int]],
                              thresholds: Sequence[float], image_size: tuple[int, int],
                              upsample: str, iou_threshold: float):
    """One jitted step counting multi-label localisation hits on a (map, R) x threshold grid.

    The protocol's box extraction labels the components of all 256 quantised levels at once, so
    a whole threshold grid costs one box pass per (map kind, R) and one compilation in total
    (instead of one compiled ``evaluate`` step per threshold and R).

    Definition (as ``metrics.multilabel_loc_correct``): for every (image, present label) slot,
    the largest box of that label's score map at threshold ``t`` is a hit when its IoU with a
    valid ground-truth box of the same label is >= ``iou_threshold``.

    Returns:
      ``step(variables, batch) -> {"hits": int32 [len(kinds_r), T], "pairs": int32 []}``.
    """
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from infocam_jax import boxes, evaluate, metrics, models  # pylint: disable=import-outside-toplevel
    table_thresholds = np.asarray(thresholds, np.float64)
    kinds_r = tuple((str(k), int(r)) for k, r in kinds_r)

    def step(variables, batch):
        _, features = model.apply(variables, batch["image"], train=False)
        kernel = models.classifier_kernel(variables)
        gt = batch["boxes"].astype(jnp.int32)                                 # [B, G, 4]
        box_labels = batch["box_labels"].astype(jnp.int32)                    # [B, G]
        box_valid = batch["box_valid"].astype(bool)
        b, g = box_labels.shape
        slot_labels, slot_valid = metrics.present_label_slots(batch["labels"], g)  # [B, L]
        slot_valid = slot_valid & batch["valid"].astype(bool)[:, None]
        match = box_valid[:, None, :] & (box_labels[:, None, :] == slot_labels[:, :, None])
        hits = []
        for kind, r in kinds_r:
            maps = evaluate.multilabel_class_maps(kind, features, kernel, slot_labels,
                                                  region_size=r)          # [B, L, h, w]
            sm = boxes.scoremaps(maps.reshape((-1,) + maps.shape[2:]), image_size, upsample)
            bx = boxes.largest_box(sm, table_thresholds).reshape(b, g, -1, 4)  # [B, L, T, 4]
            iou = metrics.iou(bx[:, :, :, None, :], gt[:, None, None, :, :])   # [B, L, T, G]
            hit = jnp.any((iou >= iou_threshold) & match[:, :, None, :], axis=-1)
            hits.append(jnp.sum(hit & slot_valid[:, :, None], axis=(0, 1), dtype=jnp.int32))
        return {"hits": jnp.stack(hits), "pairs": jnp.sum(slot_valid, dtype=jnp.int32)}

    return jax.jit(step)


def multilabel_grid(step, variables, batches, *, kinds_r, thresholds
                    ) -> dict[str, float]:
    """Runs :func:`make_multilabel_grid_step`'s step over ``batches``; flat fractions
    ``{"t{t}/R{r}/{kind}/loc_acc": f}`` over all (image, present label) pairs."""
    hits, pairs = 0, 0
    for batch in batches:
        out = step(variables, {k: batch[k] for k in
                               ("image", "boxes", "box_labels", "box_valid", "labels", "valid")})
        hits = hits + np.asarray(out["hits"], np.int64)
        pairs += int(out["pairs"])
    flat = {}
    for i, (kind, r) in enumerate(kinds_r):
        for j, t in enumerate(thresholds):
            flat[f"t{float(t):g}/R{int(r)}/{kind}/loc_acc"] = float(hits[i, j]) / max(pairs, 1)
    return flat


def flatten_grid(grid: Mapping[str, Mapping[str, float]], kinds: Sequence[str]
                 ) -> dict[str, float]:
    """Per-split grid values as ``"split/t../R../kind/loc_acc"`` plus, per map kind, the
    (threshold, R) with the best validation accuracy (first in sorted order on ties) and the
    test accuracy there: ``valsel/kind/threshold``, ``valsel/kind/R``,
    ``test/valsel/kind/loc_acc``."""
    flat = {f"{split}/{k}": v for split, per in grid.items() for k, v in per.items()}
    if "validation" in grid and "test" in grid:
        for kind in kinds:
            cands = sorted((k for k in grid["validation"] if k.endswith(f"/{kind}/loc_acc")),
                           key=lambda k: (float(k.split("/")[0][1:]), int(k.split("/")[1][1:])))
            if not cands:
                continue
            best = max(cands, key=lambda k: grid["validation"][k])  # first maximum
            flat[f"valsel/{kind}/threshold"] = float(best.split("/")[0][1:])
            flat[f"valsel/{kind}/R"] = float(best.split("/")[1][1:])
            flat[f"test/valsel/{kind}/loc_acc"] = grid["test"][best]
    return flat


def flatten_sweep(sweep: Mapping[str, Mapping[str, Mapping[str, float]]],
                  map_kinds: Sequence[str], metric: str) -> dict[str, float]:
    """Flat ``"split/t{t}/kind/metric"`` values, plus the validation-selected threshold.

    For each map kind, ``valsel/kind/threshold`` is the threshold with the best validation
    ``metric`` (the lowest one on ties) and ``test/valsel/kind/metric`` the test value there.
    """
    flat = {}
    for split, per_t in sweep.items():
        for t, res in per_t.items():
            for kind in map_kinds:
                key = f"{kind}/{metric}"
                if key in res and res[key] is not None:
                    flat[f"{split}/t{t}/{key}"] = float(res[key])
    if "validation" in sweep and "test" in sweep:
        ts = sorted(sweep["validation"], key=float)
        for kind in map_kinds:
            vals = [flat.get(f"validation/t{t}/{kind}/{metric}", float("nan")) for t in ts]
            if all(math.isnan(v) for v in vals):
                continue
            best = ts[int(np.nanargmax(vals))]
            flat[f"valsel/{kind}/threshold"] = float(best)
            flat[f"test/valsel/{kind}/{metric}"] = flat[f"test/t{best}/{kind}/{metric}"]
    return flat


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


# ----------------------------------------------------------------------------- baselines

def iou_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inclusive-pixel IoU with a clamped intersection, ``[..., 4]`` boxes -> ``[...]``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)
    return inter / (area(a) + area(b) - inter)


def random_boxes(rng: np.random.Generator, shape: tuple[int, ...], height: int, width: int
                 ) -> np.ndarray:
    """Uniformly random inclusive boxes: int64 ``shape + (4,)`` with ``x0 <= x1``, ``y0 <= y1``."""
    xs = np.sort(rng.integers(0, width, size=shape + (2,)), axis=-1)
    ys = np.sort(rng.integers(0, height, size=shape + (2,)), axis=-1)
    return np.stack([xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]], axis=-1)


def baseline_accuracies(gt_boxes: np.ndarray, image_size: tuple[int, int], *,
                        iou_threshold: float = 0.5, draws: int = 10, seed: int = 0,
                        half_canvas: bool = False) -> dict[str, float]:
    """Localisation accuracy of input-blind boxes against every ground-truth box.

    Args:
      gt_boxes: int ``[N, 4]`` valid ground-truth boxes ``(x0, y0, x1, y1)``, inclusive.
      image_size: ``(H, W)``.
      iou_threshold: IoU needed for a hit.
      draws: random boxes per ground-truth box (the accuracy is their mean).
      seed: random seed.
      half_canvas: also score the half of a two-slot canvas (left/right) holding the box.

    Returns:
      ``{"random_box": f, "full_image_box": f[, "half_canvas_box": f]}``, fractions in [0, 1].
    """
    gt = np.asarray(gt_boxes, np.int64)
    if gt.ndim != 2 or gt.shape[1] != 4 or gt.shape[0] == 0:
        raise ValueError(f"gt_boxes must have shape [N, 4] with N >= 1, got {gt.shape}")
    h, w = (int(s) for s in image_size)
    rng = np.random.default_rng(seed)
    rand = random_boxes(rng, (draws, gt.shape[0]), h, w)
    out = {"random_box": float(np.mean(iou_numpy(rand, gt[None]) >= iou_threshold)),
           "full_image_box": float(np.mean(
               iou_numpy(np.array([0, 0, w - 1, h - 1]), gt) >= iou_threshold))}
    if half_canvas:
        half = w // 2
        right = (gt[:, 0] + gt[:, 2]) / 2.0 >= half
        box = np.where(right[:, None], [half, 0, w - 1, h - 1], [0, 0, half - 1, h - 1])
        out["half_canvas_box"] = float(np.mean(iou_numpy(box, gt) >= iou_threshold))
    return out


def split_gt_boxes(batches: Iterable[Mapping[str, np.ndarray]]) -> np.ndarray:
    """Valid ground-truth boxes of real (non-padding) examples: int ``[N, 4]``."""
    out = []
    for b in batches:
        keep = np.asarray(b["box_valid"], bool) & np.asarray(b["valid"], bool)[:, None]
        out.append(np.asarray(b["boxes"])[keep])
    return np.concatenate(out).astype(np.int64)


# ----------------------------------------------------------------------------- aggregation

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


# ----------------------------------------------------------------------------- reports

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
        for kind in MULTI_LABEL_KINDS:
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


# ----------------------------------------------------------------------------- figure

def make_figure(config, model, variables, batches, path: str, *, digit: int | None = 0,
                num_images: int = 8, map_kinds: Sequence[str] = ("cam", "infocam")) -> list[int]:
    """PNG like the paper's Figure 4: the image, then CAM / infoCAM overlays of one class.

    Multi-label: the first ``num_images`` canvases holding ``digit``, maps of ``digit``, red
    boxes = that digit's ground truth. Single-label (``digit=None``): the first images, maps of
    their ground-truth class. Green boxes: each map's box at ``config.cam_threshold``.

    Returns:
      the canvas indices (positions in the split) drawn.
    """
    import jax  # pylint: disable=import-outside-toplevel
    from infocam_jax import evaluate, visualize  # pylint: disable=import-outside-toplevel
    settings = evaluate.EvalSettings.from_config(config, map_kinds=tuple(map_kinds))
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
    predict = jax.jit(functools.partial(evaluate.predict_maps, settings, model))
    out = jax.device_get(predict(variables, batch["image"], labels))
    gt_valid = np.asarray(batch["box_valid"], bool)
    if digit is not None:
        gt_valid &= batch["box_labels"] == digit
    visualize.render_grid(batch["image"], out["scoremaps"], batch["boxes"], gt_valid,
                          out["boxes"], path)
    return [p[0] for p in picked]


# ----------------------------------------------------------------------------- driver

def _threshold_results(evaluator, config, head, seed, run_dir, split_batches, thresholds,
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
                cache["step"] = make_multilabel_grid_step(
                    evaluator.model, kinds_r=kinds_r, thresholds=thresholds,
                    image_size=tuple(int(x) for x in config.image_size),
                    upsample=str(config.upsample), iou_threshold=float(config.iou_threshold))
            results = {split: multilabel_grid(cache["step"], variables, batches,
                                              kinds_r=kinds_r, thresholds=thresholds)
                       for split, batches in split_batches.items()}
        else:
            results = _json_clean(threshold_sweep(evaluator, variables, split_batches,
                                                  thresholds=thresholds, region_size=main_r,
                                                  map_kinds=map_kinds))
        sweep = dict(want, results=results)
        with open(path, "w") as f:
            json.dump(sweep, f, indent=2, sort_keys=True)
        log(f"[{head} seed {seed}] threshold sweep in {time.time() - t0:.0f}s")
    if multi:
        return flatten_grid(sweep["results"], ("cam", "infocam"))
    return flatten_sweep(sweep["results"], map_kinds, "gt_known_loc")


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


def _json_clean(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_clean(v) for v in x]
    return x


def reproduce(config, workdir: str, *, seeds: Sequence[int], region_sizes: Sequence[int],
              map_kinds: Sequence[str] | None = None, baseline_draws: int = 10,
              figure: str = "", figure_digit: int = 0, reevaluate: bool = False,
              fan_in_init: bool = False, heads: Sequence[str] | None = None,
              eval_splits: Sequence[str] = SPLITS, init_from: str = "",
              cam_thresholds: Sequence[float] = (), log=print) -> dict:
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
      fan_in_init: start from :func:`write_fan_in_init` weights (when ``config.pretrained``
        is empty); False keeps the model's own initialisation.
      log: progress printer.

    Returns:
      the summary dict written to ``<workdir>/summary.json``.
    """
    from infocam_jax import models, train  # pylint: disable=import-outside-toplevel
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
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    model = models.create(config.model, int(config.num_classes), **dict(config.model_options))
    evaluator = CachedEvaluator(config, model)
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
                results = evaluate_checkpoint(evaluator, variables, split_batches,
                                              region_sizes=eval_rs, main_region_size=main_r,
                                              map_kinds=map_kinds)
                eval_s = time.time() - t0
                record = {"head": head, "seed": int(seed), "train_seconds": train_s,
                          "eval_seconds": eval_s, "best_epoch": int(extra["epoch"]),
                          "best_val_accuracy": extra.get("val_accuracy"),
                          "results": _json_clean(results)}
                with open(eval_path, "w") as f:
                    json.dump(record, f, indent=2, sort_keys=True)
                log(f"[{head} seed {seed}] trained in {train_s:.0f}s (best epoch "
                    f"{record['best_epoch']}), evaluated in {eval_s:.0f}s")
            results = {s: {r: {k: (float("nan") if v is None else v) for k, v in res.items()}
                           for r, res in per_r.items()}
                       for s, per_r in record["results"].items()}
            flat = flatten(results, main_r)
            for s in eval_splits:
                if multi:
                    flat[f"{s}/infocam_minus_cam/loc_acc"] = (flat[f"{s}/infocam/loc_acc"]
                                                             - flat[f"{s}/cam/loc_acc"])
            if cam_thresholds:
                flat.update(_threshold_results(
                    evaluator, config, head, seed, run_dir, split_batches, cam_thresholds,
                    region_sizes, main_r, map_kinds, multi, reevaluate, grid_cache, log))
                t_main = f"{float(config.cam_threshold):g}"
                for s_ in eval_splits:
                    for r in region_sizes:
                        key = f"{s_}/t{t_main}/R{r}/infocam/loc_acc"
                        if multi and key in flat:
                            flat.setdefault(f"{s_}/R{r}/infocam/loc_acc", flat[key])
            flat["train_seconds"] = record["train_seconds"]
            flat["eval_seconds"] = record["eval_seconds"]
            flat["best_epoch"] = record["best_epoch"]
            per_head[head].append(flat)
            runs[f"{head}/seed{seed}"] = record
    aggs = {h: aggregate(v) for h, v in per_head.items()}
    baselines = baseline_accuracies(split_gt_boxes(split_batches["test"]),
                                    tuple(config.image_size),
                                    iou_threshold=float(config.iou_threshold),
                                    draws=baseline_draws, half_canvas=multi)
    if multi:
        report = multi_label_report(aggs, baselines, region_sizes, main_r)
    else:
        report = single_label_report(aggs, baselines, region_sizes, main_r, map_kinds)
    if cam_thresholds and multi:
        report += grid_report(aggs, cam_thresholds, region_sizes)
    elif cam_thresholds:
        report += threshold_report(aggs, cam_thresholds, map_kinds, sweep_metric)
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
    summary = {"dataset": str(config.dataset), "heads": list(heads), "seeds": list(seeds),
               "region_sizes": region_sizes, "main_region_size": main_r,
               "map_kinds": list(map_kinds), "baselines": baselines, "aggregate": aggs,
               "timing": timing, "wall_seconds": wall, "runs": runs,
               "config": json.loads(config.to_json_best_effort())}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(_json_clean(summary), f, indent=2, sort_keys=True)
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write(f"# {config.dataset}: {', '.join(heads)}; seeds {list(seeds)}\n\n{report}")
    log("\n" + report)
    return summary


def main(argv):
    from absl import app  # pylint: disable=import-outside-toplevel
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    reproduce(FLAGS.config, FLAGS.workdir, seeds=[int(s) for s in FLAGS.seeds],
              region_sizes=[int(r) for r in (FLAGS.region_sizes or [])],
              map_kinds=FLAGS.map_kinds, baseline_draws=FLAGS.baseline_draws,
              figure=FLAGS.figure, figure_digit=FLAGS.figure_digit,
              reevaluate=FLAGS.reevaluate, fan_in_init=FLAGS.fan_in_init,
              heads=FLAGS.heads, eval_splits=FLAGS.eval_splits, init_from=FLAGS.init_from,
              cam_thresholds=[float(t) for t in (FLAGS.cam_thresholds or [])],
              log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    FLAGS = flags.FLAGS
    config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Output root: <workdir>/<head>/seed<k>, summary.*.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")
    flags.DEFINE_list("region_sizes", None,
                      "infoCAM region sizes to evaluate (config.region_size always included).")
    flags.DEFINE_list("map_kinds", None, "Map kinds (default: by label type).")
    flags.DEFINE_integer("baseline_draws", 10, "Random boxes per ground-truth box.")
    flags.DEFINE_string("figure", "", "PNG path of a Figure-4-style grid ('' = none).")
    flags.DEFINE_integer("figure_digit", 0, "Digit whose maps the multi-label figure shows.")
    flags.DEFINE_bool("reevaluate", False, "Re-evaluate runs that already have results.")
    flags.DEFINE_list("heads", None, "Losses to train (default: config.heads or config.loss).")
    flags.DEFINE_list("eval_splits", list(SPLITS), "Splits of the full evaluation.")
    flags.DEFINE_list("cam_thresholds", None,
                      "Score thresholds of an extra localisation sweep (selected on validation).")
    flags.DEFINE_string("init_from", "", "Directory of seed<k>/ runs to start seed k from.")
    flags.DEFINE_bool("fan_in_init", False,
                      "Start from He-normal fan-in conv weights (see write_fan_in_init).")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
