"""Deprecated home of the evaluation code; it now lives in ``infocam_jax.evaluation``.

Every old name still works and points at the same object, with a ``DeprecationWarning`` naming
its new place:

==========================================  ===========================================
old (``infocam_jax.evaluate``)              new
==========================================  ===========================================
EvalSettings, MAP_KINDS, KNOWN_MAP_KINDS,   ``evaluation.settings``
MULTI_LABEL_MAP_KINDS, DISPLAY_NAMES,
V2_IOU_THRESHOLDS
class_maps, multilabel_class_maps,          ``evaluation.forward``
predict_maps
init_counts, eval_step, make_eval_step,     ``evaluation.step``
finalize
evaluate                                    ``evaluation.driver``
replicate                                   ``evaluation.devices``
format_table, write_results                 ``evaluation.run_tables``
==========================================  ===========================================
"""
from __future__ import annotations

import importlib
import warnings

_MOVED = {
    "settings": ("EvalSettings", "MAP_KINDS", "KNOWN_MAP_KINDS", "MULTI_LABEL_MAP_KINDS",
                 "DISPLAY_NAMES", "V2_IOU_THRESHOLDS"),
    "forward": ("class_maps", "multilabel_class_maps", "predict_maps"),
    "step": ("init_counts", "eval_step", "make_eval_step", "finalize"),
    "driver": ("evaluate",),
    "devices": ("replicate",),
    "run_tables": ("format_table", "write_results"),
}
_NEW_HOME = {name: module for module, names in _MOVED.items() for name in names}

__all__ = sorted(_NEW_HOME)


def __getattr__(name: str):
    if name not in _NEW_HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = f"infocam_jax.evaluation.{_NEW_HOME[name]}"
    warnings.warn(f"infocam_jax.evaluate.{name} moved to {module}.{name}; the old name will "
                  "be removed", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
