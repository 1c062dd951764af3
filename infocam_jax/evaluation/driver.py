"""Runs the cached eval step over an iterator of batches: summed counts, results, curves.

Two entry points, as in big_vision's evaluators: :func:`evaluate` returns the flat scalar
results (for logs and ``results.json``); :func:`evaluate_counts` returns the summed counters,
from which ``step.finalize`` and ``step.curves`` (accuracy at every threshold) are read and
on which threshold selection (``thresholds``) builds.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import jax

from infocam_jax import devices
from infocam_jax.evaluation import step
from infocam_jax.devices import Batch
from infocam_jax.evaluation.settings import EvalSettings


def evaluate_counts(settings: EvalSettings, model, variables, iterator: Iterable[Batch], *,
                    num_devices: int | None = None,
                    kernel_fn: Callable[[Any], jax.Array] | None = None,
                    max_batches: int | None = None) -> dict[str, Any]:
    """Summed counters (``step.init_counts`` structure) of ``iterator``, over all processes.

    Args:
      settings: evaluation settings.
      model: Flax module, ``apply(variables, images, train=False) -> (logits, features)``.
      variables: unreplicated model variables.
      iterator: yields per-process global batches (docs/interfaces.md) of host (NumPy)
        arrays; each is checked on the host before it goes to the device
        (``step.check_batch``: keys, shapes, labels in ``[0, M)``, real boxes ordered and
        inside the image, 0/1 masks; padding rows are not checked). A batch whose size
        does not divide by ``num_devices``, or is smaller than the first, is padded with
        invalid examples, so any iterator works and no batch triggers a recompile.
      num_devices: local devices to split each batch over (default: all local devices).
      kernel_fn: ``variables -> [K,M]`` classifier kernel (default
        ``models.classifier_kernel``).
      max_batches: stop after this many batches (None: exhaust the iterator).

    Raises:
      ValueError: a batch that fails ``step.check_batch`` (the message starts with its index
        in the iterator, names the key, the first offending index and its value), or a model
        whose class count is not ``settings.num_classes``.
    """
    num_devices = devices.check_num_devices(num_devices)
    p_step = step.make_eval_step(settings, model, num_devices=num_devices, kernel_fn=kernel_fn)
    p_variables = devices.replicate(variables, num_devices)
    p_counts = devices.replicate(step.init_counts(settings), num_devices)
    size = None
    for i, batch in enumerate(itertools.islice(iterator, max_batches)):
        try:
            step.check_batch(batch, settings)
        except ValueError as err:
            raise ValueError(f"batch {i} of the iterator: {err}") from None
        b = len(batch["valid"])
        if size is None:
            size = -(-b // num_devices) * num_devices
        if b > size:
            raise ValueError(f"batch {i} has {b} examples, more than the first batch's {size}")
        p_counts = p_step(p_variables, devices.shard(batch, num_devices, size), p_counts)
    return devices.sum_devices(p_counts)


def evaluate(config, model, variables, iterator: Iterable[Batch], *,
             num_devices: int | None = None,
             kernel_fn: Callable[[Any], jax.Array] | None = None,
             max_batches: int | None = None, **overrides) -> dict[str, float]:
    """Evaluates classification and localisation of every map kind over ``iterator``.

    Args:
      config: ml_collections config (fields of docs/interfaces.md).
      model, variables, iterator, num_devices, kernel_fn, max_batches: see
        :func:`evaluate_counts`.
      **overrides: fields of :class:`EvalSettings` overriding the config's.

    Returns:
      flat dict of floats (``single_label`` / ``multi_label`` docstrings); fractions in [0, 1].
    """
    settings = EvalSettings.from_config(config, **overrides)
    counts = evaluate_counts(settings, model, variables, iterator, num_devices=num_devices,
                             kernel_fn=kernel_fn, max_batches=max_batches)
    return step.finalize(settings, counts)
