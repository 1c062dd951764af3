"""Batches across devices and processes: padding, sharding, replication and summing counters.

Nothing here knows a metric. ``driver`` and ``region_grid`` use these to run a per-device step
over ``[num_devices, per_device, ...]`` batches and to sum its integer counters on the host.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

Batch = Mapping[str, np.ndarray]


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
