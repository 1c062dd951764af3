"""Evaluators named by the config, as big_vision's ``config.evals``.

A config lists its evaluations by name::

    config.evals.val = dict(type="classification", every_epoch=True)
    config.evals.loc = dict(type="localization", map_kinds=("cam", "infocam"),
                            normalize="max", num_box_thresholds=100)
    config.evals.px = dict(type="pxap", every_epoch=True)

Every entry has a ``type`` (a key of :data:`REGISTRY`), ``every_epoch`` (run on the validation
split after every validation epoch of training; default False) and ``final`` (run on the chosen
checkpoint at the end; default True); any other key is an ``EvalSettings`` field overriding the
config's own protocol fields (``map_kinds``, ``normalize``, ``cam_threshold``,
``num_box_thresholds``, ...). ``config.evals`` is the only way to choose the evaluations: the base
config (``infocam_jax.config.base_config``) lists ``classification`` (every epoch: the cheap
validation of model selection, no boxes) and ``localization`` (the full protocol on the chosen
checkpoint; its results keep their unprefixed keys in ``results.json``); a mask dataset adds
``pxap`` (configs/wsol.py does for OpenImages). Training (``train.trainer``) and
``infocam-evaluate`` run the list; results are logged under ``<name>/``. Model selection reads
``accuracy`` of the first ``every_epoch`` evaluator that reports it.

New evaluator types register with :func:`register` (a class with ``__init__(name, settings,
every_epoch, final)``, ``splits(report_split)`` and ``run(model, variables, batches, *,
num_devices, max_batches)``), e.g. post-hoc map kinds.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from infocam_jax.evaluation import driver, pxap, step
from infocam_jax.evaluation.settings import KNOWN_MAP_KINDS, EvalSettings

REGISTRY: dict[str, type] = {}
_SPEC_KEYS = ("type", "every_epoch", "final")
_SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(EvalSettings)
                        if f.name not in ("image_size", "multi_label", "num_classes"))


def register(type_name: str) -> Callable[[type], type]:
    """Class decorator: makes ``type_name`` usable as ``config.evals.<name>.type``."""
    def add(cls):
        REGISTRY[type_name] = cls
        return cls
    return add


class _Evaluator:
    """Shared construction: the name, the settings and when it runs."""

    def __init__(self, name: str, settings: EvalSettings, every_epoch: bool, final: bool):
        self.name, self.settings = name, settings
        self.every_epoch, self.final = bool(every_epoch), bool(final)

    def splits(self, report_split: str) -> tuple[str, ...]:
        """The splits :meth:`run` reads to report on ``report_split``."""
        return (report_split,)


@register("classification")
class Classification(_Evaluator):
    """Classification only (top-1 / top-5, or per-label and exact match): the eval step at its
    cheapest (CAM, fixed threshold, no grid); only the classification keys are returned."""

    def __init__(self, name, settings, every_epoch, final):
        super().__init__(name, dataclasses.replace(settings, map_kinds=("cam",),
                                                   box_accuracy=False, num_box_thresholds=1),
                         every_epoch, final)

    def run(self, model, variables, batches, *, num_devices=None, max_batches=None):
        (split,) = batches
        counts = driver.evaluate_counts(self.settings, model, variables, batches[split],
                                        num_devices=num_devices, max_batches=max_batches)
        return {k: v for k, v in step.finalize(self.settings, counts).items()
                if k.split("/")[0] not in KNOWN_MAP_KINDS}


@register("localization")
class Localization(_Evaluator):
    """The WSOL protocol of ``driver``: every map kind at the fixed threshold, and with
    ``box_accuracy`` the grid (MaxBoxAcc, MaxBoxAccV2), plus classification."""

    def run(self, model, variables, batches, *, num_devices=None, max_batches=None):
        (split,) = batches
        counts = driver.evaluate_counts(self.settings, model, variables, batches[split],
                                        num_devices=num_devices, max_batches=max_batches)
        return step.finalize(self.settings, counts)


@register("pxap")
class PxAP(_Evaluator):
    """PxAP of mask datasets (``evaluation.pxap``); on test also the pixel-IoU threshold
    chosen on validation."""

    def splits(self, report_split):
        return ("validation", "test") if report_split == "test" else (report_split,)

    def run(self, model, variables, batches, *, num_devices=None, max_batches=None):
        out = pxap.evaluate(self.settings, model, variables, batches, num_devices=num_devices,
                            max_batches=max_batches)
        return out["test"] if "test" in out else next(iter(out.values()))


def specs_of(config) -> dict[str, dict[str, Any]]:
    """``config.evals`` as plain dicts, checked (each entry's type, fields and data)."""
    evals = config.get("evals", None)
    evals = dict(evals.to_dict() if hasattr(evals, "to_dict") else (evals or {}))
    if not evals:
        raise ValueError("config.evals must name at least one evaluator, e.g. config.evals."
                         "localization = dict(type='localization')")
    for name, spec in evals.items():
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(f"config.evals.{name} must be a dict with a 'type' (one of "
                             f"{sorted(REGISTRY)})")
        if spec["type"] not in REGISTRY:
            raise ValueError(f"config.evals.{name}.type={spec['type']!r} is not one of "
                             f"{sorted(REGISTRY)}")
        unknown = [k for k in spec if k not in _SPEC_KEYS + _SETTING_FIELDS]
        if unknown:
            raise ValueError(f"config.evals.{name}.{unknown[0]} is not an evaluator field "
                             f"({', '.join(_SPEC_KEYS + _SETTING_FIELDS)})")
        if spec["type"] == "pxap" and str(config.get("dataset", "")) != "wsol_metadata":
            raise ValueError(f"config.evals.{name}.type='pxap' needs a mask dataset "
                             f"(config.dataset='wsol_metadata'), got config.dataset="
                             f"{config.get('dataset')!r}")
    return {name: dict(spec) for name, spec in evals.items()}


def build(config) -> list:
    """The evaluators of ``config`` (see the module docstring), in their listed order."""
    out = []
    for name, spec in specs_of(config).items():
        overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items()
                     if k not in _SPEC_KEYS}
        settings = EvalSettings.from_config(config, **overrides)
        out.append(REGISTRY[spec["type"]](name, settings, spec.get("every_epoch", False),
                                          spec.get("final", True)))
    return out


def run_all(evaluators, model, variables, batches_of: Callable[[str], Iterable], *,
            report_split: str, num_devices: int | None = None,
            max_batches: int | None = None) -> dict[str, dict[str, float]]:
    """``{name: results on report_split}`` of ``evaluators``; ``batches_of(split)`` gives a
    fresh iterable of that split's batches for each evaluator."""
    return {ev.name: ev.run(model, variables, {s: batches_of(s) for s in ev.splits(report_split)},
                            num_devices=num_devices, max_batches=max_batches)
            for ev in evaluators}


def flat_results(evaluators, results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """One flat dict: the first localization evaluator's keys unprefixed (the paper's tables,
    ``run_tables``, read them; ``results.json`` of the old fields is unchanged), every other
    evaluator's keys as ``<name>/<key>``."""
    primary = next((ev.name for ev in evaluators
                    if isinstance(ev, Localization) and ev.name in results), None)
    out = dict(results[primary]) if primary is not None else {}
    for name, res in results.items():
        if name != primary:
            out.update({f"{name}/{k}": v for k, v in res.items()})
    return out


def selection_accuracy(evaluators, results: Mapping[str, Mapping[str, float]]) -> float:
    """``accuracy`` of the first per-epoch evaluator that reports it (model selection)."""
    for ev in evaluators:
        if ev.name in results and "accuracy" in results[ev.name]:
            return float(results[ev.name]["accuracy"])
    raise ValueError("model selection needs an every_epoch evaluator reporting 'accuracy' "
                     "(type 'classification' or 'localization') in config.evals")
