"""Coherency and ARCC: pytorch-grad-cam's ``metrics.arcc`` (``Coherency``, ``ARCC``) as
streaming counts.

Notation as ``infocam_jax.metrics.faithfulness``: images ``I`` ``[B, H, W, C]``, score maps
``L`` ``[B, H, W]`` in [0, 1] of class ``c``; ``maps_fn(images, labels) -> [B, H, W]`` makes the
same kind of score map of new images (in the eval step: the map kind's maps, upsampled and
normalised as the evaluation reads them).

* **Coherency**: ``(ρ(L', L) + 1) / 2`` per image, ``L' = maps_fn(L ∘ I)`` the map of the image
  multiplied by its own map (``faithfulness.explanation_images``), ``ρ`` the Pearson
  correlation over the pixels with the sample (``n − 1``) normalisation,
  ``ρ = cov / (σ_a σ_b + 1e-8)`` (the peer's ``batch_pearson_coherency``). 1 = the map
  explains its own explanation the same way.
* **Complexity**: mean ``|L|`` per image (``faithfulness.ComplexityCounts``).
* **ROAD**: per image, ``clip(2 · ROADCombined, 0, 1)``, ROADCombined = (mean LeRF − mean MoRF
  score change) / 2 over ``percentiles`` (ARCC's default (20, 40, 60, 80); ROAD's noisy
  linear imputation, ``faithfulness.road_images``).
* **ARCC** per image = the harmonic mean ``3 / (1/(coh + ε) + 1/((1 − complexity) + ε) +
  1/(road + ε))``, ``ε = 1e-8`` (the peer's formula), then averaged over images: not a
  function of averaged parts, so :class:`ArccCounts` sums the per-image values.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from infocam_jax import _checks
from infocam_jax.metrics import faithfulness

__all__ = ["ARCC_PERCENTILES", "ArccCounts", "arcc_counts", "arcc_per_image",
           "coherency_per_image", "pearson_coherency"]

ARCC_PERCENTILES = (20, 40, 60, 80)      # pytorch-grad-cam's ARCC default
EPS = 1e-8


def pearson_coherency(a, b):
    """``(ρ(a_i, b_i) + 1) / 2`` per image of float ``[B, H, W]`` pairs: float32 ``[B]``
    (sample Pearson correlation over the pixels, ``cov / (σ_a σ_b + 1e-8)``)."""
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"maps must be two [B, H, W] arrays of one shape, got {a.shape}, "
                         f"{b.shape}")
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    n = a.shape[1]
    ac = a - jnp.mean(a, axis=1, keepdims=True)
    bc = b - jnp.mean(b, axis=1, keepdims=True)
    cov = jnp.sum(ac * bc, axis=1) / (n - 1)
    std_a = jnp.sqrt(jnp.sum(ac ** 2, axis=1) / (n - 1))
    std_b = jnp.sqrt(jnp.sum(bc ** 2, axis=1) / (n - 1))
    return (cov / (std_a * std_b + EPS) + 1) / 2


def coherency_per_image(maps_fn: Callable, images, scoremaps, labels):
    """Coherency of every image (module docstring): float32 ``[B]``."""
    mixed = faithfulness.explanation_images(images, scoremaps)
    return pearson_coherency(maps_fn(mixed, labels), scoremaps)


def arcc_per_image(apply_fn: Callable, maps_fn: Callable, images, scoremaps, labels, key, *,
                   percentiles: Sequence[float] = ARCC_PERCENTILES,
                   noise: float = faithfulness.DEFAULT_NOISE) -> dict:
    """ARCC and its parts per image (module docstring).

    Args:
      apply_fn: ``images [n,H,W,C] -> logits [n,M]``.
      maps_fn: ``(images [B,H,W,C], labels [B]) -> score maps [B,H,W]`` in [0, 1].
      images: float ``[B,H,W,C]``; scoremaps: float ``[B,H,W]`` in [0, 1] (``maps_fn`` of
        ``images``); labels: int ``[B]``; key: PRNG key of ROAD's imputation noise.
      percentiles: ROAD's (static, in (0, 100)); noise: its imputation noise.

    Returns:
      ``{"arcc", "coherency", "complexity", "road"}``, each float32 ``[B]`` (``road`` is the
      clipped ``2 · ROADCombined``).
    """
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    y = faithfulness.class_scores(apply_fn(images), labels)
    change = {}
    for order in faithfulness.ROAD_ORDERS:
        change[order] = jnp.mean(jnp.stack([
            faithfulness.class_scores(apply_fn(faithfulness.road_images(
                images, scoremaps, p, order, key, labels, noise=noise)), labels) - y
            for p in percentiles]), axis=0)
    road = jnp.clip(change["lerf"] - change["morf"], 0.0, 1.0)     # 2 · ROADCombined
    coherency = coherency_per_image(maps_fn, images, scoremaps, labels)
    complexity = jnp.mean(jnp.abs(jnp.asarray(scoremaps, jnp.float32)), axis=(1, 2))
    arcc = 3 / (1 / (coherency + EPS) + 1 / ((1 - complexity) + EPS) + 1 / (road + EPS))
    return {"arcc": arcc, "coherency": coherency, "complexity": complexity, "road": road}


@flax.struct.dataclass
class ArccCounts:
    """Streaming sums of the per-image ARCC and coherency.

    Attributes:
      arcc: float32 ``[]``: Σ ARCC; coherency: float32 ``[]``: Σ coherency.
      count: int32 ``[]``: images counted.
    """
    arcc: jax.Array
    coherency: jax.Array
    count: jax.Array

    @classmethod
    def empty(cls) -> ArccCounts:
        zf = jnp.zeros((), jnp.float32)
        return cls(arcc=zf, coherency=zf, count=jnp.zeros((), jnp.int32))

    def merge(self, other: ArccCounts) -> ArccCounts:
        return jax.tree.map(jnp.add, self, other)

    def add(self, arcc, coherency, valid=None) -> ArccCounts:
        """Adds images given their ARCC and coherency, float ``[B]`` each."""
        arcc = jnp.asarray(arcc, jnp.float32)
        coherency = jnp.asarray(coherency, jnp.float32)
        if arcc.ndim != 1 or coherency.shape != arcc.shape:
            raise ValueError(f"arcc and coherency must have one shape [B], got {arcc.shape}, "
                             f"{coherency.shape}")
        valid = _checks.check_valid(valid, arcc.shape[0])
        return self.merge(ArccCounts(
            arcc=jnp.sum(jnp.where(valid, arcc, 0.0)),
            coherency=jnp.sum(jnp.where(valid, coherency, 0.0)),
            count=jnp.sum(valid, dtype=jnp.int32)))

    def result(self) -> dict:
        """``arcc`` and ``coherency``: means over images."""
        n = self.count.astype(jnp.float32)
        return {"arcc": self.arcc / n, "coherency": self.coherency / n}


def arcc_counts(apply_fn: Callable, maps_fn: Callable, images, scoremaps, labels, key,
                valid=None, *, percentiles: Sequence[float] = ARCC_PERCENTILES,
                noise: float = faithfulness.DEFAULT_NOISE) -> ArccCounts:
    """ARCC counts of one batch (:func:`arcc_per_image`; ``valid`` optional bool ``[B]``)."""
    per_image = arcc_per_image(apply_fn, maps_fn, images, scoremaps, labels, key,
                               percentiles=percentiles, noise=noise)
    return ArccCounts.empty().add(per_image["arcc"], per_image["coherency"], valid)
