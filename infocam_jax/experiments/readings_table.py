"""The one "CAM vs infoCAM under every reading" table: its flat keys and its Markdown layout.

Every printout of the readings uses this module: the main job (``training.train_and_evaluate``
with ``config.eval_readings``), the reproduction (``reproduction.reproduce``), the saved-runs
re-reader (``saved_runs.read_runs``) and the published ``docs/results_data/*_readings.md``.

Flat keys of one run (:func:`flat`, from ``thresholds.evaluate_readings``), per normalisation
``mode`` in ``("minmax", "max")``:

- ``{mode}/test/{key}``: every fixed-threshold test result (``{kind}/{metric}``, ``top1_cls``,
  ``cls_acc``, ``{kind}/max_box_acc``, ...), at ``config.cam_threshold``;
- ``{mode}/{kind}/{metric}/valsel`` (test at the threshold chosen on validation),
  ``.../valsel_threshold``, ``.../valsel_validation``, ``.../best_test`` and
  ``.../best_threshold`` (``thresholds.flat_selection``).

A caller may put them under a prefix (the reproduction uses ``readings/``) and aggregate them
over seeds (``seed_tables.aggregate``); :func:`render` prints the aggregate: one row per
(head, reading), one column per map kind, ``mean ± std`` in percent, chosen thresholds in
brackets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from infocam_jax.experiments import seed_tables
from infocam_jax.evaluation import run_tables, thresholds
from infocam_jax.evaluation.settings import DISPLAY_NAMES, NORMALIZE_NAMES, EvalSettings

MODES = ("max", "minmax")
# (row name, normalisation, what): the six readings, in the printed order.
_ROWS = (("max-normalised, t = {t} (paper)", "max", "fixed"),
         ("min-max, t = {t} (protocol)", "minmax", "fixed"),
         ("max-normalised, t chosen on validation", "max", "valsel"),
         ("min-max, t chosen on validation", "minmax", "valsel"),
         ("max-normalised, best t on test", "max", "best_test"),
         ("min-max, best t on test", "minmax", "best_test"))
_CLASSIFICATION_KEYS = ("cls_acc", "exact_match", "top1_cls", "top5_cls")
_TEST_MAXIMISED_KEYS = ("max_box_acc", "max_box_acc_v2")
_METRIC_TITLES = {"loc_acc": "Localisation accuracy (%) per present digit",
                  "gt_known_loc": "GT-known Loc (%)", "top1_loc": "Top-1 Loc (%)"}


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def flat(readings: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """One run's readings (``thresholds.evaluate_readings``, or its JSON form of
    ``readings.to_json``: nulls read as NaN) as the flat keys of the module docstring."""
    out = {}
    for mode, r in readings.items():
        for key, value in r["test"].items():
            out[f"{mode}/test/{key}"] = _number(value)
        for key, value in thresholds.flat_selection(r["selection"]).items():
            out[f"{mode}/{key}"] = _number(value)
    return out


def _cell(agg, key: str, threshold_key: str | None = None) -> str:
    if key not in agg:
        return "-"
    text = seed_tables.pm(agg, key)
    if threshold_key and threshold_key in agg:
        text += f" (t {agg[threshold_key]['mean']:.2f})"
    return text


def table(aggs: Mapping[str, Mapping], kinds: Sequence[str], metric: str, t_fixed: float,
          prefix: str = "") -> str:
    """Markdown of one swept metric: rows = (head, reading), columns = map kinds.

    Args:
      aggs: ``{head: seed_tables.aggregate(...)}`` of :func:`flat` keys (under ``prefix``).
      kinds: map kinds (columns).
      metric: ``loc_acc`` | ``gt_known_loc`` | ``top1_loc``.
      t_fixed: the fixed score threshold (``config.cam_threshold``).
      prefix: key prefix, e.g. ``"readings/"``.
    """
    lines = ["| head | reading | " + " | ".join(kinds) + " |",
             "|---|---|" + "---:|" * len(kinds)]
    for head, agg in aggs.items():
        for name, mode, what in _ROWS:
            cells = []
            for kind in kinds:
                if what == "fixed":
                    cells.append(_cell(agg, f"{prefix}{mode}/test/{kind}/{metric}"))
                else:
                    base = f"{prefix}{mode}/{kind}/{metric}"
                    t_key = "valsel_threshold" if what == "valsel" else "best_threshold"
                    cells.append(_cell(agg, f"{base}/{what}", f"{base}/{t_key}"))
            lines.append(f"| {head} | {name.format(t=f'{t_fixed:g}')} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines) + "\n"


def table_fixed(aggs: Mapping[str, Mapping], kinds: Sequence[str], key: str,
                prefix: str = "") -> str:
    """Markdown: rows = (head, normalisation), columns = kinds, of the test result ``key``."""
    lines = ["| head | normalisation | " + " | ".join(kinds) + " |",
             "|---|---|" + "---:|" * len(kinds)]
    for head, agg in aggs.items():
        for mode in MODES:
            cells = [_cell(agg, f"{prefix}{mode}/test/{k}/{key}") for k in kinds]
            lines.append(f"| {head} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def header(settings: EvalSettings, seeds: Sequence) -> str:
    """The first line: split, unit, seeds, IoU, R, threshold grid, the two normalisations."""
    return (f"Test split, %, mean ± std over seeds {list(seeds)}; largest box at IoU >= "
            f"{settings.iou_threshold:g}; R = {settings.region_size}; threshold grid "
            f"np.arange(0, 1, 1/{settings.num_box_thresholds}); min-max = (m - min)/(max - "
            "min), max-normalised = max(m, 0)/max(m).\n")


def classification_line(aggs: Mapping[str, Mapping], prefix: str = "") -> str:
    """``Classification (test): head key mean ± std, ...; ...`` (min-max keys; classification
    does not depend on the normalisation)."""
    keys = [k for k in _CLASSIFICATION_KEYS
            if any(f"{prefix}minmax/test/{k}" in agg for agg in aggs.values())]
    return "Classification (test): " + "; ".join(
        f"{head} " + ", ".join(f"{k} {seed_tables.pm(agg, f'{prefix}minmax/test/{k}')}"
                               for k in keys)
        for head, agg in aggs.items()) + ".\n"


def render(aggs: Mapping[str, Mapping], settings: EvalSettings, seeds: Sequence, *,
           prefix: str = "", wall_seconds: float | None = None) -> str:
    """The whole readings printout of ``aggs`` (heads in their order; kinds =
    ``settings.map_kinds``; metrics = ``thresholds.metrics_of(settings)``; single-label sets
    add MaxBoxAcc / MaxBoxAccV2, maximised on test by definition). ``wall_seconds`` adds the
    closing wall-clock line."""
    kinds = list(settings.map_kinds)
    parts = [header(settings, seeds), classification_line(aggs, prefix)]
    for metric in thresholds.metrics_of(settings):
        parts.append(f"**{metric}**\n\n"
                     + table(aggs, kinds, metric, settings.cam_threshold, prefix))
    if not settings.multi_label:
        for key in _TEST_MAXIMISED_KEYS:
            parts.append(f"**{key}** (threshold maximised on test, by definition)\n\n"
                         + table_fixed(aggs, kinds, key, prefix))
    text = "\n".join(parts)
    if wall_seconds is not None:
        text += f"\nWall-clock: {wall_seconds:.0f} s.\n"
    return text


def _valsel_cell(values: Mapping[str, float], base: str) -> str:
    value = _number(values.get(f"{base}/valsel"))
    t = _number(values.get(f"{base}/valsel_threshold"))
    return run_tables.pct(value) + ("" if t != t else f" (t {t:.2f})")


def valsel_caption(settings: EvalSettings) -> str:
    """The reading of :func:`valsel_table`, and where the fixed-threshold readings are."""
    return (f"Reading: threshold chosen on the validation split (in brackets) from np.arange(0, 1, "
            f"1/{settings.num_box_thresholds}), {settings.upsample} upsampling, IoU >= "
            f"{settings.iou_threshold:g}. The paper's (max-normalised, t = "
            f"{settings.cam_threshold:g}) and the protocol's (min-max, t = "
            f"{settings.cam_threshold:g}) fixed readings are in the summary.")


def valsel_table(values: Mapping[str, float], settings: EvalSettings) -> str:
    """One run's test localisation at the threshold chosen on validation (the reading we
    recommend; the main job's first table per head): per swept metric, rows = map kinds,
    columns = the normalisations, in percent with the chosen threshold in brackets.

    Args:
      values: :func:`flat` keys of one run (no prefix).
      settings: the run's settings (map kinds, metrics, grid, IoU, upsampling).
    """
    parts = []
    for metric in thresholds.metrics_of(settings):
        lines = [f"{_METRIC_TITLES[metric]}, test split, threshold chosen on validation", "",
                 "| Map | " + " | ".join(NORMALIZE_NAMES[m] for m in MODES) + " |",
                 "|---|" + "---:|" * len(MODES)]
        for kind in settings.map_kinds:
            cells = [_valsel_cell(values, f"{mode}/{kind}/{metric}") for mode in MODES]
            lines.append(f"| {DISPLAY_NAMES.get(kind, kind)} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts) + "\n" + valsel_caption(settings) + "\n"
