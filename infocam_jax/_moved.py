"""Module attributes that moved elsewhere: the old name still works, with a DeprecationWarning.

Used by the deprecated homes (``evaluate``, ``evaluation.common``, ``evaluation.reports``,
``evaluation.summary``) and by ``metrics`` for its old multi-label names::

    __getattr__, __dir__ = _moved.moved_attributes(__name__, {"old_name": "new.module"})
"""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import Mapping


def moved_attributes(module: str, new_homes: Mapping[str, str],
                     removed: Mapping[str, str] | None = None):
    """The module-level ``__getattr__`` and ``__dir__`` of a module whose names moved.

    Args:
      module: the old module's ``__name__``.
      new_homes: old attribute name -> full name of the module that holds it now (imported on
        first use).
      removed: names that are gone for good -> the AttributeError message (naming the
        replacement).

    Returns:
      ``(__getattr__, __dir__)``. ``__getattr__(name)`` returns the moved object and warns
      ``"{module}.{name} moved to {new}.{name}; the old name will be removed"``
      (DeprecationWarning, pointing at the caller); any other name is an AttributeError.
      ``__dir__()`` lists the module's globals and the moved names, sorted.
    """
    removed = dict(removed or {})

    def __getattr__(name: str):
        if name in removed:
            raise AttributeError(removed[name])
        if name not in new_homes:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new = new_homes[name]
        warnings.warn(f"{module}.{name} moved to {new}.{name}; the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new), name)

    def __dir__():
        return sorted(set(vars(sys.modules[module])) | set(new_homes))

    return __getattr__, __dir__
