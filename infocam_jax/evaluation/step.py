"""The one builder of the eval step: forward -> CAM-family and post-hoc maps -> boxes -> counts.

One compiled step per batch does everything on device: the model's forward pass, the maps of the
requested kinds (post-hoc ones by their own gradient / forward passes), upsampling and
normalisation (``settings.normalize``), box extraction at the fixed threshold and over the whole
threshold grid, the faithfulness metrics' forward passes (``settings.faithfulness``), and the
update of the counters. The
counters stay on device across batches; the host sums them once at the end, over devices and
processes (``devices.sum_devices``). Padded examples (``batch["valid"] == False``) add nothing.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from infocam_jax.evaluation import backends, multi_label, single_label
from infocam_jax.evaluation.settings import EvalSettings


def _evaluator(settings: EvalSettings):
    return multi_label if settings.multi_label else single_label


def init_counts(settings: EvalSettings) -> dict[str, Any]:
    """Zero counters of one device (``single_label.init_counts`` / ``multi_label.init_counts``)."""
    return _evaluator(settings).init_counts(settings)


def finalize(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, float]:
    """Summed counters -> flat results dict of floats in [0, 1] (NaN when nothing counted)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _evaluator(settings).finalize(settings, counts)


def curves(settings: EvalSettings, counts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Accuracy-versus-threshold curves of the summed counters (see the evaluators)."""
    return _evaluator(settings).curves(settings, counts)


def check_batch(batch: Mapping[str, Any], settings: EvalSettings) -> None:
    """Raises ValueError naming the keys of docs/interfaces.md that ``batch`` lacks."""
    missing = [k for k in _evaluator(settings).REQUIRED_KEYS if k not in batch]
    if missing:
        raise ValueError(f"batch is missing keys {missing} (see docs/interfaces.md)")


def eval_step(settings: EvalSettings, model, kernel_fn, variables, batch, counts):
    """Per-device eval step: adds one (per-device) batch to the counters.

    Knows nothing about its parallel wrapper (no collectives), so ``jax.pmap``, ``jax.jit``
    or ``jax.shard_map`` can run it unchanged.

    Args:
      settings: static evaluation settings.
      model: Flax module: any ``infocam_jax.models`` network (ACoL / SPG are applied with
        ``labels=batch["label"]``, the ground truth, and their maps fuse their branches:
        ``backends.forward_readout``), or one with ``apply(variables, images, train=False) ->
        (logits [B,M], features [B,h,w,K])``.
      kernel_fn: ``variables -> [K,M]`` (``(logits, features)`` models only).
      variables: model variables.
      batch: dict of docs/interfaces.md (``image`` ``[B,H,W,C]``, ``label`` ``[B]``,
        ``boxes`` ``[B,G,4]``, ``box_valid`` ``[B,G]``, ``valid`` ``[B]``, multi-label also
        ``labels`` ``[B,M]`` and ``box_labels`` ``[B,G]``).
      counts: counters as made by :func:`init_counts`.

    Returns:
      the updated counters (same structure).
    """
    backends.check_model_settings(settings, model)
    logits, readout = backends.forward_readout(model, variables, batch["image"],
                                               batch["label"].astype("int32"),
                                               kernel_fn=kernel_fn)
    features, kernel = readout.branches[0].features, readout.branches[0].kernel
    valid = batch["valid"].astype(bool)
    extra = {} if settings.multi_label else {"readout": readout}
    return _evaluator(settings).update(settings, logits, features, kernel, batch, valid, counts,
                                       network=(model, variables), **extra)


def make_eval_step(settings: EvalSettings, model, *, num_devices: int,
                   kernel_fn: Callable[[Any], jax.Array] | None = None):
    """``jax.pmap`` of :func:`eval_step` over ``num_devices`` (axis ``"batch"``), cached.

    The same (settings, model, device count, kernel function) returns the same compiled step,
    so evaluating several splits, checkpoints, seeds or heads of one architecture compiles once
    (settings, Flax modules and kernel functions are hashable).

    Returns:
      ``f(replicated_variables, sharded_batch, sharded_counts) -> sharded_counts``; every
      input and output has a leading device axis; the counters' buffers are donated.
    """
    return _make_eval_step(settings, model, int(num_devices),
                           kernel_fn or backends.default_kernel_fn())


@functools.lru_cache(maxsize=32)
def _make_eval_step(settings, model, num_devices, kernel_fn):
    step = functools.partial(eval_step, settings, model, kernel_fn)
    return jax.pmap(step, axis_name="batch", devices=jax.local_devices()[:num_devices],
                    donate_argnums=(2,))
