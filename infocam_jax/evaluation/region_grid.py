"""Sweeps over given score-threshold lists (and, multi-label, infoCAM region sizes R).

``thresholds.selection`` reads the settings' own grid from the eval step's counters; the
reproduction driver also sweeps user-given threshold lists (``--cam_thresholds``) jointly with
the region size R. For multi-label sets one jitted step counts the whole (map kind, R) x
threshold grid (the box pass labels all 256 quantised levels at once, so a grid costs one box
pass per (map, R) and one compilation in total).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import boxes
from infocam_jax.metrics import multilabel as mlm
from infocam_jax.evaluation import backends, driver, forward, step
from infocam_jax.evaluation.settings import EvalSettings


def run(settings: EvalSettings, model, variables, batches) -> dict[str, float]:
    """Flat results of ``batches`` with the (cached) eval step of ``settings``."""
    return step.finalize(settings, driver.evaluate_counts(settings, model, variables, batches))


def threshold_sweep(config, model, variables, split_batches, *,
                    thresholds: Sequence[float], region_size: int, map_kinds: Sequence[str]
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """Results at several fixed score thresholds: ``{split: {str(t): results}}`` (one R; one
    compiled step per threshold, for thresholds off the settings' grid)."""
    out = {}
    for split, batches in split_batches.items():
        out[split] = {}
        for t in thresholds:
            settings = EvalSettings.from_config(config, region_size=int(region_size),
                                                map_kinds=tuple(map_kinds),
                                                cam_threshold=float(t))
            out[split][f"{float(t):g}"] = run(settings, model, variables, batches)
    return out


_GRID_KEYS = ("image", "boxes", "box_labels", "box_valid", "labels", "valid")


def make_multilabel_grid_step(settings: EvalSettings, model, *,
                              kinds_r: Sequence[tuple[str, int]], thresholds: Sequence[float]):
    """One jitted step counting multi-label localisation hits on a (map, R) x threshold grid.

    The protocol's box extraction labels the components of all 256 quantised levels at once, so
    a whole threshold grid costs one box pass per (map kind, R) and one compilation in total
    (instead of one compiled ``evaluate`` step per threshold and R).

    Definition (as ``multilabel_metrics.multilabel_loc_correct``): for every (image, present label) slot,
    the largest box of that label's score map at threshold ``t`` is a hit when its IoU with a
    valid ground-truth box of the same label is >= ``settings.iou_threshold``.

    Args:
      settings: the reading (``image_size``, ``upsample``, ``normalize``, ``iou_threshold``,
        ``box_backend``); its own region size and threshold grid are not used.
      model: the Flax module.
      kinds_r: the (map kind, R) rows of the grid.
      thresholds: ``[T]`` score thresholds in [0, 1].

    Returns:
      ``step(variables, batch) -> {"hits": int32 [len(kinds_r), T], "pairs": int32 []}``; it
      checks the host ``batch`` first (``step.check_batch``: shapes, image size, labels in
      ``[0, M)``, real boxes ordered and inside the image, 0/1 masks; ValueError naming the
      key, the first offending index and its value), then runs the jitted grid.
    """
    table_thresholds = np.asarray(thresholds, np.float64)
    image_size = tuple(settings.image_size)
    box_opts = backends.box_options(settings)
    empty = mlm.LocCurveCounts.empty(settings.num_classes, table_thresholds,
                                     settings.iou_threshold)
    kinds_r = tuple((str(k), int(r)) for k, r in kinds_r)

    backends.check_model_settings(settings, model)

    def grid_step(variables, batch):
        _, readout = backends.forward_readout(model, variables, batch["image"])
        features, kernel = readout.branches[0].features, readout.branches[0].kernel
        gt = batch["boxes"].astype(jnp.int32)                                 # [B, G, 4]
        box_labels = batch["box_labels"].astype(jnp.int32)                    # [B, G]
        box_valid = batch["box_valid"].astype(bool)
        g = box_labels.shape[1]
        slot_labels, slot_valid = mlm.present_label_slots(batch["labels"], g)  # [B, L]
        slot_valid = slot_valid & batch["valid"].astype(bool)[:, None]
        hits = []
        for kind, r in kinds_r:
            maps = forward.multilabel_class_maps(kind, features, kernel, slot_labels,
                                                  region_size=r)          # [B, L, h, w]
            sm = boxes.scoremaps(maps.reshape((-1,) + maps.shape[2:]), image_size,
                                 settings.upsample, normalize=settings.normalize
                                 ).reshape(maps.shape[:2] + image_size)
            best = mlm.slot_max_iou(sm, slot_labels, gt, box_labels, box_valid,
                                    table_thresholds, **box_opts)         # [B, L, T]
            counts = empty.add(best, slot_labels, slot_valid)              # per label [M, T]
            hits.append(jnp.sum(counts.correct, axis=0))
        return {"hits": jnp.stack(hits), "pairs": jnp.sum(slot_valid, dtype=jnp.int32)}

    jitted = jax.jit(grid_step)

    def checked_step(variables, batch):
        step.check_batch(batch, settings)
        return jitted(variables, {k: batch[k] for k in _GRID_KEYS})

    return checked_step


def multilabel_grid(grid_step, variables, batches, *, kinds_r, thresholds
                    ) -> dict[str, float]:
    """Runs :func:`make_multilabel_grid_step`'s step over ``batches`` (host batches of the
    multi-label keys, docs/interfaces.md, each checked by the step); flat fractions
    ``{"t{t}/R{r}/{kind}/loc_acc": f}`` over all (image, present label) pairs.

    Raises:
      ValueError: a batch that fails ``step.check_batch`` (the message starts with its index).
    """
    hits, pairs = 0, 0
    for i, batch in enumerate(batches):
        try:
            out = grid_step(variables, batch)
        except ValueError as err:
            raise ValueError(f"batch {i} of batches: {err}") from None
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
