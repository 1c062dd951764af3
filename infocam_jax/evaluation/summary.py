"""Deprecated: the tables over seeds moved to ``evaluation.seed_tables`` (same names), and the
readings report to ``evaluation.readings_table.render`` (the one readings layout); each old
name warns once used."""
from __future__ import annotations

import warnings

from infocam_jax.evaluation import seed_tables as _new

__all__ = ["DISPLAY", "MULTI_LABEL_KINDS", "aggregate", "flatten", "grid_report", "mean_std",
           "multi_label_report", "pm", "reading_line", "single_label_report",
           "threshold_report"]


def __getattr__(name: str):
    if name == "readings_report":
        raise AttributeError("evaluation.summary.readings_report was replaced by "
                             "evaluation.readings_table.render (one layout for every readings "
                             "printout)")
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"infocam_jax.evaluation.summary.{name} moved to "
                  f"infocam_jax.evaluation.seed_tables.{name}; the old name will be removed",
                  DeprecationWarning, stacklevel=2)
    return getattr(_new, name)
