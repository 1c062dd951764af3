"""Batches across devices and processes: padding, sharding, replication and summing counters.

Nothing here knows a model or a metric. Training (:mod:`infocam_jax.train`) and evaluation
(:mod:`infocam_jax.evaluation`) both run a per-device step over ``[num_devices, per_device,
...]`` batches with a replicated state; evaluation also sums its integer counters on the host.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.jax_utils
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


def shard(batch: Batch, num_devices: int, size: int | None = None) -> dict[str, np.ndarray]:
    """Reshapes every array of a per-process batch from ``[b, ...]`` to ``[num_devices,
    b / num_devices, ...]``; with ``size`` (a multiple of ``num_devices``), pads the batch to
    ``size`` first (:func:`pad_to`).

    Raises:
      ValueError: when b is not divisible by num_devices.
    """
    if size is not None:
        batch = pad_to(batch, size)
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.shape[0] % num_devices:
            raise ValueError(
                f"batch[{name!r}] has leading size {value.shape[0]}, not divisible by "
                f"{num_devices} local devices")
        out[name] = value.reshape(num_devices, value.shape[0] // num_devices, *value.shape[1:])
    return out


def replicate(tree: Any, num_devices: int | None = None) -> Any:
    """Stacks a pytree on the first ``num_devices`` local devices (default: all of them; leading
    axis = devices), the layout ``jax.pmap`` takes for a replicated argument."""
    return flax.jax_utils.replicate(tree, jax.local_devices()[:num_devices])


def unreplicate(tree: Any) -> Any:
    """First local replica of a replicated pytree, as host NumPy (works on any process)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)


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


def check_batch_divisible(global_batch: int, what: str = "config.batch_size") -> int:
    """Returns the per-device batch; raises when `global_batch` does not split over devices."""
    n = jax.device_count()
    if global_batch < n or global_batch % n:
        raise ValueError(
            f"{what}={global_batch} must be a positive multiple of the number of devices "
            f"({n} = {jax.process_count()} process(es) x {jax.local_device_count()} local "
            f"device(s)), so that every device gets the same number of examples")
    return global_batch // n
