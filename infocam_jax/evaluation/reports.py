"""Deprecated: the tables of one evaluation moved to ``evaluation.run_tables`` (same names:
``pct``, ``caption``, ``format_table``, ``write_results``); each old name warns once used."""
from __future__ import annotations

from infocam_jax import _moved

__all__ = ["caption", "format_table", "pct", "write_results"]

__getattr__ = _moved.moved_attributes(
    __name__, dict.fromkeys(__all__, "infocam_jax.evaluation.run_tables"))[0]
