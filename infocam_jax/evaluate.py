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

from infocam_jax import _moved

_MOVED = {
    "settings": ("EvalSettings", "MAP_KINDS", "KNOWN_MAP_KINDS", "MULTI_LABEL_MAP_KINDS",
                 "DISPLAY_NAMES", "V2_IOU_THRESHOLDS"),
    "forward": ("class_maps", "multilabel_class_maps", "predict_maps"),
    "step": ("init_counts", "eval_step", "make_eval_step", "finalize"),
    "driver": ("evaluate",),
    "devices": ("replicate",),
    "run_tables": ("format_table", "write_results"),
}
_NEW_HOME = {name: f"infocam_jax.evaluation.{module}"
             for module, names in _MOVED.items() for name in names}

__all__ = sorted(_NEW_HOME)

__getattr__, __dir__ = _moved.moved_attributes(__name__, _NEW_HOME)
