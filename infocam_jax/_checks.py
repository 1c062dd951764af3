"""Argument checks shared by the core modules (cams, losses, metrics, boxes).

Shape and dtype checks run at trace time; value checks only when the values are concrete
(eager calls): under ``jit`` / ``vmap`` traced values cannot be inspected.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside ``jit`` / ``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


def check_labels(labels, batch: int, num_classes: int, *, name: str = "labels",
                 classes_from: str = "M"):
    """Checks int ``labels [B]`` with values in ``[0, num_classes)``; returns an int32 array.

    Args:
      labels: the array to check.
      batch: the expected ``B``.
      num_classes: ``M``; values are checked only when concrete.
      name: the argument's name in error messages.
      classes_from: where ``M`` comes from, for error messages.

    Raises:
      ValueError: wrong shape or dtype, or (concrete only) a value outside ``[0, M)``.
    """
    labels = jnp.asarray(labels)
    if labels.shape != (batch,):
        raise ValueError(f"{name} must have shape [B] = ({batch},), got shape {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {labels.dtype}")
    if is_concrete(labels) and labels.size:
        values = np.asarray(labels)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}) ({classes_from}), got "
                             f"values in [{lo}, {hi}]")
    return labels.astype(jnp.int32)
