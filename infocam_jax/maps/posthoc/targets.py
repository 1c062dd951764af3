"""What a post-hoc map explains: each image's target, in the forms pytorch-grad-cam users write.

A map of target ``c`` differentiates (gradient maps) or reads (perturbation maps) one score per
image, ``y[b] = score(logits[b])`` with ``logits [B, M]`` pre-softmax. ``targets`` is one of:

* ``None`` (the default everywhere): the predicted class, ``argmax_m logits[b, m]`` of the
  unperturbed image, as pytorch-grad-cam when its ``targets`` is None. Resolved from the
  logits the map computes anyway: no extra forward pass.
* int ``[B]`` in ``[0, M)``: one class per image, ``y[b] = logits[b, targets[b]]``
  (pytorch-grad-cam's ``ClassifierOutputTarget``).
* a :class:`Score` (``registry.compute`` wraps any callable): ``y[b] = fn(logits[b])`` for a
  user's scalar function ``fn(logits [M]) -> []``, differentiated instead of the one-hot
  (e.g. ``lambda z: z[3] - z[5]``, or a softmax probability). Perturbation maps apply ``fn`` to
  the logits of each perturbed image, as the peer applies its target callables. A map that
  needs a class index says so with ``callable_targets=False`` at registration and refuses it.
* multi-label (``registry.compute`` only): int ``[B, T]`` with ``-1`` padding, or a bool mask
  ``[B, M]`` (one slot per present label, ``T`` = the largest count of present labels when the
  mask is concrete, ``M`` under ``jit``). The map is computed once per slot and returned as
  ``(maps [B, T, h, w], valid [B, T])``; padded slots hold zeros.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import _checks


@dataclasses.dataclass(frozen=True)
class Score:
    """A user's scalar target ``fn(logits [M]) -> []`` (float), applied to each image.

    A static pytree (no leaves): it passes through ``jax.jit`` as part of the compiled function,
    so each new ``fn`` compiles once.
    """
    fn: Callable[[jax.Array], jax.Array]

    def __call__(self, logits):
        """``logits [..., M]`` -> float32 ``[...]``."""
        flat = logits.reshape(-1, logits.shape[-1])
        values = jax.vmap(self.fn)(flat)
        if values.shape != flat.shape[:1]:
            raise ValueError(f"targets (a callable of the logits [M]) must return a scalar, "
                             f"got shape {values.shape[1:]}")
        return values.reshape(logits.shape[:-1]).astype(jnp.float32)


jax.tree_util.register_static(Score)


def as_score(targets):
    """``targets`` with a bare callable wrapped in :class:`Score` (arrays and None unchanged)."""
    if callable(targets) and not isinstance(targets, (Score, jax.Array, np.ndarray)):
        return Score(targets)
    return targets


def is_multilabel(targets) -> bool:
    """True for int ``[B, T]`` slots or a bool ``[B, M]`` mask (rank 2 arrays)."""
    return targets is not None and not isinstance(targets, Score) and jnp.ndim(targets) == 2


def check(targets, batch: int, num_classes: int):
    """One target per image: returns ``None``, a :class:`Score`, or int32 ``[B]``.

    Raises:
      ValueError: ``targets`` not None / a Score / int ``[B]``, or (concrete) outside ``[0, M)``.
    """
    if targets is None or isinstance(targets, Score):
        return targets
    return _checks.check_labels(targets, batch, num_classes, name="targets",
                                classes_from="the model's number of classes M")


def resolve(targets, logits):
    """``None`` -> the predicted class ``argmax(logits [B, M])`` int32 ``[B]``; else unchanged."""
    if targets is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return targets


def scores(targets, logits):
    """The score each map explains: ``logits [B, ..., M]`` -> float32 ``[B, ...]``.

    ``targets``: int ``[B]`` (``logits[b, ..., targets[b]]``, indices clipped into range: the
    callers set the rows of out-of-range targets to NaN), or a :class:`Score`.
    """
    if isinstance(targets, Score):
        return targets(logits)
    index = jnp.clip(targets, 0, logits.shape[-1] - 1)
    index = index.reshape(index.shape + (1,) * (logits.ndim - 1))
    return jnp.take_along_axis(logits, index, axis=-1)[..., 0].astype(jnp.float32)


def valid(targets, num_classes: int):
    """``[B]`` bool: int targets in ``[0, M)``; ``None`` (all valid, returns None) / Score too."""
    if targets is None or isinstance(targets, Score):
        return None
    return (targets >= 0) & (targets < num_classes)


def slots(targets, batch: int, num_classes: int):
    """Multi-label targets -> ``(slots int32 [B, T], valid bool [B, T])``; padded slots hold 0.

    Args:
      targets: int ``[B, T]`` with ``-1`` padding, or bool ``[B, M]``.

    Raises:
      ValueError: wrong shape or dtype, or (concrete) a label outside ``[-1, M)``.
    """
    targets = jnp.asarray(targets)
    if targets.dtype == jnp.bool_:
        if targets.shape != (batch, num_classes):
            raise ValueError(f"targets as a bool mask must have shape [B, M] = "
                             f"({batch}, {num_classes}), got {targets.shape}")
        count = (int(np.max(np.sum(np.asarray(targets), axis=1), initial=1))
                 if _checks.is_concrete(targets) else num_classes)
        order = jnp.argsort(~targets, axis=1, stable=True)[:, :max(count, 1)]
        present = jnp.take_along_axis(targets, order, axis=1)
        return jnp.where(present, order, 0).astype(jnp.int32), present
    if not jnp.issubdtype(targets.dtype, jnp.integer) or targets.shape[0] != batch:
        raise ValueError(f"multi-label targets must be int [B, T] (B = {batch}, -1 pads) or bool "
                         f"[B, M], got dtype {targets.dtype} and shape {targets.shape}")
    present = targets != -1
    _checks.check_label_values(targets, num_classes, name="targets", where=present,
                               classes_from="the model's number of classes M; -1 pads")
    return jnp.where(present, targets, 0).astype(jnp.int32), present
