"""Augmentation smoothing (``aug_smooth=True`` of :func:`~.registry.compute`), for every map.

pytorch-grad-cam's test-time augmentation (its default ``ttach`` transforms): the map of each of
the six views ``X_v = f · flip_h(X)`` (no flip / horizontal flip x ``f ∈ {0.9, 1, 1.1}``, a
brightness factor) is computed, flipped back where the view was flipped, and the six are
averaged: ``L = (1/6) Σ_v flip_v(L(X_v))``. The six views go through the map in one call of
batch ``6B`` (memory grows six-fold; the map's own ``chunk_size`` still applies).

The flip back acts on the map's width axis (axis 2 of ``[B, h, w]`` or ``[B, H, W, C]``), at the
map's resolution. pytorch-grad-cam min-max scales each view's map and resizes it to the image
before flipping and averaging; we average the raw maps (the maps stay in the package's raw
contract, and ``boxes.scoremaps`` scales the average): equal to the peer with its scaling
replaced by the identity (``tests/gradcam_peer.py``), which is how it is tested.
"""
from __future__ import annotations

import jax.numpy as jnp

from infocam_jax.maps.posthoc import core
from infocam_jax.maps.posthoc import targets as targets_lib

FLIPS = (False, True)
FACTORS = (0.9, 1.0, 1.1)


def check_aug_smooth(aug_smooth) -> bool:
    if not isinstance(aug_smooth, bool):
        raise ValueError(f"aug_smooth must be a Python bool (static), got {aug_smooth!r}")
    return aug_smooth


def views(images):
    """The six views ``[2, 3, B, H, W, C]``: (no flip, flip) x ``FACTORS``."""
    images = core.check_images(images)
    flipped = jnp.stack([images, images[:, :, ::-1]])
    return jnp.asarray(FACTORS, images.dtype)[None, :, None, None, None, None] * flipped[:, None]


def smoothed(fn, model, variables, images, targets, **options):
    """``(1/6) Σ_v flip_v(fn(model, variables, X_v, targets, **options))`` (module docstring).

    Args:
      fn: a map function (``registry.PosthocMap.fn``) returning ``[B, h, w, ...]``.
      images: float ``[B, H, W, C]``; targets: int ``[B]`` (each view explains its image's
        class), ``None`` (each view's predicted class, as the peer) or a
        :class:`~.targets.Score`.

    Returns:
      float32, ``fn``'s output shape.

    Raises:
      ValueError: ``targets`` not of shape ``[B]``, and ``fn``'s own errors.
    """
    stacked = views(images)
    batch = stacked.shape[2]
    n = len(FLIPS) * len(FACTORS)
    if targets is not None and not isinstance(targets, targets_lib.Score):
        targets = jnp.asarray(targets)
        if targets.shape != (batch,):
            raise ValueError(f"targets must have shape [B] = ({batch},), got {targets.shape}")
        targets = jnp.tile(targets, n)
    maps = fn(model, variables, stacked.reshape((n * batch,) + stacked.shape[3:]), targets,
              **options)
    maps = maps.reshape((len(FLIPS), len(FACTORS), batch) + maps.shape[1:])
    maps = jnp.stack([maps[0], jnp.flip(maps[1], axis=3)])
    return jnp.mean(maps, axis=(0, 1))
