"""Shared plumbing of the evaluators: padding, device placement, summing counts, JSON, boxes.

Nothing here knows a metric: evaluators build on these helpers.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

Batch = Mapping[str, np.ndarray]


def box_options(settings) -> dict[str, Any]:
    """Keyword arguments every ``boxes.largest_box`` / ``boxes.max_contour_iou`` call of the
    eval step receives (the one place that passes ``settings.box_backend`` on)."""
    return {"backend": settings.box_backend}


def default_kernel_fn():
    """``models.classifier_kernel`` (imported lazily: evaluation's core needs no model zoo)."""
    from infocam_jax import models  # pylint: disable=import-outside-toplevel
    return models.classifier_kernel


def pad_to(batch: Batch, size: int) -> dict[str, np.ndarray]:
    """Pads every array's leading axis to ``size`` with zeros (``valid`` is False there)."""
    b = len(batch["valid"])
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if b < size:
            value = np.concatenate([value, np.zeros((size - b,) + value.shape[1:], value.dtype)])
        out[key] = value
    return out


def shard(batch: Batch, num_devices: int, size: int) -> dict[str, np.ndarray]:
    """Pads ``batch`` to ``size`` (a multiple of ``num_devices``) and reshapes every array to
    ``[num_devices, size // num_devices, ...]``."""
    per_device = size // num_devices
    return {k: v.reshape((num_devices, per_device) + v.shape[1:])
            for k, v in pad_to(batch, size).items()}


def replicate(tree, num_devices: int):
    """Stacks a pytree ``num_devices`` times on the first local devices (leading device axis)."""
    devices = jax.local_devices()[:num_devices]
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(np.stack([np.asarray(x)] * num_devices), sharding), tree)


def sum_devices(p_counts):
    """Sums per-device counters (leading device axis) on the host, then over processes."""
    counts = jax.tree_util.tree_map(lambda x: np.asarray(x).sum(0), p_counts)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
        counts = jax.tree_util.tree_map(
            lambda x: np.asarray(multihost_utils.process_allgather(x)).sum(0), counts)
    return counts


def check_num_devices(num_devices: int | None) -> int:
    """``num_devices`` (default: all local devices), checked against the local device count."""
    num_devices = jax.local_device_count() if num_devices is None else int(num_devices)
    if not 1 <= num_devices <= jax.local_device_count():
        raise ValueError(f"num_devices must be in [1, {jax.local_device_count()}], "
                         f"got {num_devices}")
    return num_devices


def json_clean(x):
    """NaN / inf -> None, NumPy scalars and arrays -> Python values, recursively."""
    if isinstance(x, np.ndarray):
        return json_clean(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    return x


def write_json(obj, path: str | os.PathLike) -> str:
    """Writes ``json_clean(obj)`` (sorted keys, indented); creates parent directories."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(json_clean(obj), f, indent=2, sort_keys=True)
    return str(path)
