"""CAM vs infoCAM under several readings of the maps, evaluated and kept: the paper's, the
protocol's, and the threshold chosen on validation under each normalisation, with the optimistic
best threshold.

Values come from ``thresholds.evaluate_readings`` (validation and test, both normalisations, one
compiled step per normalisation shared by every head); this module loads the splits, runs it,
writes ``readings.json`` and caches per-run flat scalars. The table and its flat keys are
``readings_table`` (the one layout of every readings printout).
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from infocam_jax import data
from infocam_jax.evaluation import json_files, run_tables, thresholds
from infocam_jax.experiments import readings_table, seed_tables
from infocam_jax.evaluation.settings import EvalSettings

def load_splits(config, splits: Sequence[str] = ("validation", "test")
                ) -> dict[str, list[dict[str, np.ndarray]]]:
    """This process's eval batches of each split, kept in memory (``max_eval_batches`` kept)."""
    max_batches = int(config.get("max_eval_batches", 0)) or None
    out = {}
    for split in splits:
        it = data.make_iterator(config, split, training=False,
                                batch_size=int(config.eval_batch_size) // jax.process_count(),
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
        out[split] = [{k: np.asarray(v) for k, v in b.items()}
                      for b in itertools.islice(it, max_batches)]
    return out


def evaluate_run(config, model, variables, splits=None) -> dict[str, dict[str, Any]]:
    """``thresholds.evaluate_readings`` on the validation and test splits of ``config``."""
    splits = splits or load_splits(config)
    return thresholds.evaluate_readings(config, model, variables, splits["validation"],
                                        splits["test"])


def to_json(readings: Mapping[str, Mapping[str, Any]]) -> dict:
    """JSON-ready copy: settings as their reading line, curves as lists."""
    return {mode: {"reading": r["settings"].reading, "validation": r["validation"],
                   "test": r["test"], "selection": r["selection"]}
            for mode, r in readings.items()}


def write(readings_by_head: Mapping[str, Mapping[str, Any]], workdir: str) -> str:
    """Writes ``<workdir>/readings.json`` (curves, chosen thresholds, both splits)."""
    return json_files.write_json({h: to_json(r) for h, r in readings_by_head.items()},
                             os.path.join(workdir, "readings.json"))


def head_report(title: str, results: Mapping[str, float],
                readings: Mapping[str, Mapping[str, Any]]) -> str:
    """A heads run's first table per head: ``## {title}``, the classification part of its test
    results (``run_tables.classification_table``), then CAM vs infoCAM at the threshold chosen
    on validation under both normalisations (``readings_table.valsel_table``) with its reading.
    The fixed-threshold readings are left to the summary (:func:`write_heads_summary`)."""
    settings = next(iter(readings.values()))["settings"]
    return (f"## {title}: maps read at the threshold chosen on validation\n\n"
            f"{run_tables.classification_table(results)}\n"
            f"{readings_table.valsel_table(readings_table.flat(readings), settings)}")


def write_heads_summary(all_results: Mapping[str, Mapping[str, float]],
                        readings_by_head: Mapping[str, Mapping[str, Any]], workdir: str,
                        settings: EvalSettings, *, seed: int) -> str:
    """Writes a heads run's ``results.md`` / ``results.json`` (and ``readings.json``).

    The Markdown holds the fixed-threshold tables (with their reading line) of every head that
    ``readings_by_head`` lacks (read under ``settings``, the config's protocol), then the
    readings table (``readings_table.render``, one seed: ``seed``) of the heads it has.

    Returns:
      the Markdown text.
    """
    parts = [f"## {head}\n\n{run_tables.format_table(results, settings)}"
             for head, results in all_results.items() if head not in readings_by_head]
    if readings_by_head:
        aggs = {h: seed_tables.aggregate([readings_table.flat(r)])
                for h, r in readings_by_head.items()}
        first = next(iter(readings_by_head.values()))
        parts.append("## CAM vs infoCAM under every reading\n\n" + readings_table.render(
            aggs, first["minmax"]["settings"], [int(seed)]))
    text = "\n".join(parts)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(text)
    json_files.write_json(dict(all_results), os.path.join(workdir, "results.json"))
    if readings_by_head:
        write(readings_by_head, workdir)
    return text


def cached_flat(config, model, load_variables, splits, path: str, *,
                reevaluate: bool = False, flatten=None, **overrides) -> dict[str, float]:
    """``flatten`` (default ``readings_table.flat``) of ``thresholds.evaluate_readings`` on
    ``splits["validation"]`` and ``splits["test"]``, cached with the full curves in the JSON
    file ``path`` (``load_variables()`` gives the variables; called only when not cached, and
    before ``flatten``). Cached nulls are read back as NaN; a cache written before the one key
    scheme (keys ``readings/...``) is re-flattened from its stored curves."""
    if os.path.exists(path) and not reevaluate:
        stored = json_files.read_json(path)
        values = stored["flat"]
        if any(k.startswith("readings/") for k in values):
            values = {**{k: v for k, v in values.items() if not k.startswith("readings/")},
                      **readings_table.flat(stored["readings"])}
        return {k: (float("nan") if v is None else v) for k, v in values.items()}
    out = thresholds.evaluate_readings(config, model, load_variables(), splits["validation"],
                                       splits["test"], **overrides)
    values = (flatten or readings_table.flat)(out)
    json_files.write_json({"flat": values, "readings": to_json(out)}, path)
    return values
