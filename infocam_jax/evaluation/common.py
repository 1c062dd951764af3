"""Deprecated: ``evaluation.common`` was split by job; every old name still works, with a
``DeprecationWarning`` naming its new module:

- ``Batch``, ``pad_to``, ``shard``, ``replicate``, ``sum_devices``, ``check_num_devices``:
  ``evaluation.devices``;
- ``json_clean``, ``write_json``: ``evaluation.json_files``;
- ``box_options``, ``default_kernel_fn``: ``evaluation.backends``.
"""
from __future__ import annotations

import importlib
import warnings

_MOVED = {
    "devices": ("Batch", "pad_to", "shard", "replicate", "sum_devices", "check_num_devices"),
    "json_files": ("json_clean", "write_json"),
    "backends": ("box_options", "default_kernel_fn"),
}
_NEW_HOME = {name: module for module, names in _MOVED.items() for name in names}

__all__ = sorted(_NEW_HOME)


def __getattr__(name: str):
    if name not in _NEW_HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = f"infocam_jax.evaluation.{_NEW_HOME[name]}"
    warnings.warn(f"infocam_jax.evaluation.common.{name} moved to {module}.{name}; the old "
                  "name will be removed", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
