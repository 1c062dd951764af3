"""Deprecated: ``evaluation.common`` was split by job; every old name still works, with a
``DeprecationWarning`` naming its new module:

- ``Batch``, ``pad_to``, ``shard``, ``replicate``, ``sum_devices``, ``check_num_devices``:
  ``evaluation.devices``;
- ``json_clean``, ``write_json``: ``evaluation.json_files``;
- ``box_options``, ``default_kernel_fn``: ``evaluation.backends``.
"""
from __future__ import annotations

from infocam_jax import _moved

_MOVED = {
    "devices": ("Batch", "pad_to", "shard", "replicate", "sum_devices", "check_num_devices"),
    "json_files": ("json_clean", "write_json"),
    "backends": ("box_options", "default_kernel_fn"),
}
_NEW_HOME = {name: f"infocam_jax.evaluation.{module}"
             for module, names in _MOVED.items() for name in names}

__all__ = sorted(_NEW_HOME)

__getattr__, __dir__ = _moved.moved_attributes(__name__, _NEW_HOME)
