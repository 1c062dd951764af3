"""Deprecated: the tables over seeds moved to ``evaluation.seed_tables`` (same names), and the
readings report to ``evaluation.readings_table.render`` (the one readings layout); each old
name warns once used."""
from __future__ import annotations

from infocam_jax import _moved

__all__ = ["DISPLAY", "MULTI_LABEL_KINDS", "aggregate", "flatten", "grid_report", "mean_std",
           "multi_label_report", "pm", "reading_line", "single_label_report",
           "threshold_report"]

__getattr__ = _moved.moved_attributes(
    __name__, dict.fromkeys(__all__, "infocam_jax.evaluation.seed_tables"),
    removed={"readings_report": "evaluation.summary.readings_report was replaced by "
                                "evaluation.readings_table.render (one layout for every "
                                "readings printout)"})[0]
