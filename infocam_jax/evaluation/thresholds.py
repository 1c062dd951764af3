"""Threshold sweeps and the threshold chosen on a held-out split, as evaluation results.

The fixed 0.2 of the paper stays the headline reading; beside it, for each map kind, this module
reports the accuracy-versus-threshold curve on validation, the threshold maximising it, and the
test accuracy at that threshold (the reference protocol's "train-fullsup" idea: the threshold is
a hyper-parameter tuned on held-out data with boxes, never on test). It builds on the summed
counters of ``driver.evaluate_counts``: every grid threshold is counted by the one compiled eval
step (one box pass per map serves the whole grid), so a sweep costs no recompilation.

Metrics swept: single-label ``gt_known_loc`` and ``top1_loc``; multi-label ``loc_acc`` (over
all (image, present digit) pairs).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from infocam_jax.evaluation import driver, step
from infocam_jax.devices import Batch
from infocam_jax.evaluation.settings import NORMALIZE_MODES, EvalSettings


def metrics_of(settings: EvalSettings) -> tuple[str, ...]:
    """The swept metrics: ``("loc_acc",)`` multi-label, else GT-known and Top-1 Loc."""
    return ("loc_acc",) if settings.multi_label else ("gt_known_loc", "top1_loc")


def select(thresholds: Sequence[float], validation: Sequence[float],
           test: Sequence[float]) -> dict[str, float]:
    """The threshold maximising ``validation`` and the ``test`` value there.

    Args:
      thresholds: ``[T]`` score thresholds.
      validation: ``[T]`` accuracy on the selection split (NaN entries are skipped).
      test: ``[T]`` accuracy on the reported split.

    Returns:
      ``threshold`` (the first, i.e. lowest, maximiser on ties), ``validation`` (its value),
      ``test`` (the test value at it), and the optimistic reference ``best_test`` =
      ``max(test)`` with ``best_threshold`` (MaxBoxAcc-style: chosen on the test split itself).
      All NaN when ``validation`` is all NaN.
    """
    t = np.asarray(thresholds, np.float64)
    v = np.asarray(validation, np.float64)
    s = np.asarray(test, np.float64)
    if not t.shape == v.shape == s.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"thresholds, validation and test must have one shape [T], got "
                         f"{t.shape}, {v.shape}, {s.shape}")
    nan = float("nan")
    out = {"threshold": nan, "validation": nan, "test": nan, "best_test": nan,
           "best_threshold": nan}
    if not np.all(np.isnan(s)):
        j = int(np.nanargmax(s))
        out.update(best_test=float(s[j]), best_threshold=float(t[j]))
    if not np.all(np.isnan(v)):
        i = int(np.nanargmax(v))
        out.update(threshold=float(t[i]), validation=float(v[i]), test=float(s[i]))
    return out


def selection(settings: EvalSettings, validation_counts: Mapping[str, Any],
              test_counts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Curves on both splits and the validation-chosen threshold, per map kind and metric.

    Returns:
      ``{kind: {metric: {"thresholds": [T], "validation_curve": [T], "test_curve": [T],
      **select(...)}}}`` (curves float64, fractions in [0, 1]).
    """
    grid = settings.box_thresholds
    val = step.curves(settings, validation_counts)
    test = step.curves(settings, test_counts)
    out = {}
    for kind in settings.map_kinds:
        out[kind] = {}
        for metric in metrics_of(settings):
            out[kind][metric] = {"thresholds": grid, "validation_curve": val[kind][metric],
                                 "test_curve": test[kind][metric],
                                 **select(grid, val[kind][metric], test[kind][metric])}
    return out


def flat_selection(sel: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, float]:
    """Scalar keys of :func:`selection`: ``kind/metric/valsel`` (test accuracy at the threshold
    chosen on validation), ``kind/metric/valsel_threshold``, ``kind/metric/valsel_validation``,
    ``kind/metric/best_test`` and ``kind/metric/best_threshold``."""
    flat = {}
    for kind, per_metric in sel.items():
        for metric, s in per_metric.items():
            flat[f"{kind}/{metric}/valsel"] = s["test"]
            flat[f"{kind}/{metric}/valsel_threshold"] = s["threshold"]
            flat[f"{kind}/{metric}/valsel_validation"] = s["validation"]
            flat[f"{kind}/{metric}/best_test"] = s["best_test"]
            flat[f"{kind}/{metric}/best_threshold"] = s["best_threshold"]
    return flat


def evaluate_readings(config, model, variables, validation: Iterable[Batch],
                      test: Iterable[Batch], *, normalizations: Sequence[str] = NORMALIZE_MODES,
                      num_devices: int | None = None, **overrides) -> dict[str, dict[str, Any]]:
    """Evaluates validation and test under each normalisation, with threshold selection.

    The two splits share one compiled step per normalisation (``step.make_eval_step`` caches
    it, also across calls: heads or seeds of one architecture compile once).

    Args:
      config: experiment config (docs/interfaces.md fields).
      model, variables: the model and its variables.
      validation, test: re-iterable batches (lists) of the two splits.
      normalizations: subset of ``("minmax", "max")``.
      num_devices: local devices (default all).
      **overrides: ``EvalSettings`` fields.

    Returns:
      ``{normalize: {"settings": EvalSettings, "test": flat test results at the fixed
      threshold, "validation": the same on validation, "selection": :func:`selection`}}``.
    """
    out = {}
    for mode in normalizations:
        settings = EvalSettings.from_config(config, **dict(overrides, normalize=mode,
                                                           box_accuracy=True))
        counts = {split: driver.evaluate_counts(settings, model, variables, batches,
                                                num_devices=num_devices)
                  for split, batches in (("validation", validation), ("test", test))}
        out[mode] = {"settings": settings,
                     "validation": step.finalize(settings, counts["validation"]),
                     "test": step.finalize(settings, counts["test"]),
                     "selection": selection(settings, counts["validation"], counts["test"])}
    return out
