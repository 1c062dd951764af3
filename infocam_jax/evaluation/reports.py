"""Deprecated: the tables of one evaluation moved to ``evaluation.run_tables`` (same names:
``pct``, ``caption``, ``format_table``, ``write_results``); each old name warns once used."""
from __future__ import annotations

import warnings

from infocam_jax.evaluation import run_tables as _new

__all__ = ["caption", "format_table", "pct", "write_results"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"infocam_jax.evaluation.reports.{name} moved to "
                  f"infocam_jax.evaluation.run_tables.{name}; the old name will be removed",
                  DeprecationWarning, stacklevel=2)
    return getattr(_new, name)
