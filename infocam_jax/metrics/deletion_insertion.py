"""Deletion and insertion: RISE's causal metrics of explanation maps, as streaming counts.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models"
(BMVC 2018, §4.1), as torch-cam's ``DeletionInsertionMetric`` (0.5) computes them. Notation as
``infocam_jax.metrics.faithfulness``: images ``I`` float ``[B, H, W, C]`` as the model sees them
(normalised), score maps ``L`` float ``[B, H, W]``, ``c`` the explained class, the *score* the
softmax probability ``softmax(f(x))_c``.

* **Order.** The ``N = H W`` pixels of each image are ranked by ``L``, highest first; ties keep
  raster order (a stable sort, as torch-cam's). A pixel is replaced on every channel at once.
* **Steps.** With ``S`` steps (``steps``, default 20 as torch-cam), ``s = ceil(N / S)`` pixels
  change per step; the curve has the points ``k_j = min(j s, N)``, ``j = 0 .. ceil(N / s)``
  (so ``k_0 = 0`` and the last point is ``N``), at the fractions ``t_j = k_j / N``.
* **Deletion**: ``x_j`` is ``I`` with its ``k_j`` most relevant pixels set to the baseline
  ``Z``; ``Z = 0`` by default (RISE's and torch-cam's deletion baseline: 0 in the normalised
  space, the data set's mean colour). A faithful map makes the score fall fast: *lower* AUC
  is better.
* **Insertion**: ``x_j`` is ``Z`` with the ``k_j`` most relevant pixels of ``I`` put back;
  ``Z`` is RISE's blurred image by default (:func:`blurred_images`; torch-cam's default
  baseline, zeros, is ``baseline="zeros"``). *Higher* AUC is better.
* **AUC** = the trapezoid rule over the actual fractions,
  ``Σ_j (t_{j+1} − t_j) (p_j + p_{j+1}) / 2`` with ``p_j = softmax(f(x_j))_c``
  (``torch.trapezoid(curve, fractions)``; RISE's uniform spacing when ``s`` divides ``N``).

RISE's blur is ``conv2d`` of every channel by the 11 x 11 kernel ``gaussian_filter(delta, 5)``
(SciPy, ``mode="reflect"``, truncated at 4 sigma) with zero padding of 5: :func:`blur_kernel` is
that kernel's 1D factor, computed in closed form.

:class:`CausalCounts` keeps the per-point sum of the curves over images, so the merged mean
curve and its AUC (the mean of the images' AUCs, the trapezoid being linear) come out of
``.result()``. All steps of all images are computed in one jitted pass: a ``lax.map`` over
chunks of ``chunk_size`` points, each one forward pass of ``chunk_size * B`` images.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax import _checks
from infocam_jax.metrics.faithfulness import class_scores

__all__ = ["BASELINES", "CAUSAL_MODES", "DEFAULT_BASELINES", "DEFAULT_STEPS", "CausalCounts",
           "blur_kernel", "blurred_images", "causal_counts", "causal_curves", "causal_points",
           "pixel_ranks"]

CAUSAL_MODES = ("deletion", "insertion")
BASELINES = ("zeros", "blur")
# RISE's baselines: zeros for deletion, the blurred image for insertion.
DEFAULT_BASELINES = {"deletion": "zeros", "insertion": "blur"}
DEFAULT_STEPS = 20                     # torch-cam's DeletionInsertionMetric default
RISE_BLUR_SIZE = 11
RISE_BLUR_SIGMA = 5.0


def _check_mode(mode: str) -> str:
    if mode not in CAUSAL_MODES:
        raise ValueError(f"mode must be one of {CAUSAL_MODES}, got {mode!r}")
    return mode


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def causal_points(num_pixels: int, steps: int = DEFAULT_STEPS) -> np.ndarray:
    """The pixel counts ``k_j`` of the curve (module docstring): int64 ``[J + 1]``, from 0 to
    ``num_pixels`` in steps of ``ceil(num_pixels / steps)``."""
    num_pixels = _check_positive_int(num_pixels, "num_pixels")
    steps = _check_positive_int(steps, "steps")
    stride = -(-num_pixels // steps)
    return np.append(np.arange(0, num_pixels, stride), num_pixels)


def blur_kernel(size: int = RISE_BLUR_SIZE, sigma: float = RISE_BLUR_SIGMA) -> np.ndarray:
    """RISE's blur kernel, 1D factor: float64 ``[size]``, summing to 1.

    ``scipy.ndimage.gaussian_filter1d`` of a unit impulse at the centre of a length-``size``
    signal: the Gaussian of ``sigma`` sampled on ``[-r, r]``, ``r = int(4 sigma + 0.5)``,
    normalised there, with the taps that fall outside folded back by half-sample reflection
    (SciPy's "reflect" mode). The 2D kernel is ``outer(k, k)``.
    """
    size = _check_positive_int(size, "size")
    if size % 2 == 0:
        raise ValueError(f"size must be odd, got {size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    # out[i] = sum_j w[j] * delta_ext[i + j]; half-sample reflection of index i + j
    index = np.arange(size)[:, None] + taps[None, :]
    period = np.mod(index, 2 * size)
    source = np.where(period < size, period, 2 * size - 1 - period)
    return np.sum(np.where(source == size // 2, weights[None, :], 0.0), axis=1)


def blurred_images(images, size: int = RISE_BLUR_SIZE, sigma: float = RISE_BLUR_SIGMA):
    """RISE's insertion baseline: every channel of ``images [B,H,W,C]`` convolved with
    ``outer(k, k)`` (:func:`blur_kernel`), zero padding ``size // 2``: float32 ``[B,H,W,C]``."""
    images = _checks.check_images(images)
    k = jnp.asarray(np.outer(*(2 * [blur_kernel(size, sigma)])), jnp.float32)
    c = images.shape[-1]
    kernel = jnp.broadcast_to(k[:, :, None, None], (size, size, 1, c))
    return lax.conv_general_dilated(images, kernel, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=c, precision=lax.Precision.HIGHEST)


def pixel_ranks(scoremaps):
    """Rank of every pixel in its image's map, 0 = most relevant (stable: ties in raster
    order): int32 ``[B, H, W]`` from float ``[B, H, W]``."""
    maps = jnp.asarray(scoremaps, jnp.float32)
    flat = maps.reshape(maps.shape[0], -1)
    order = jnp.argsort(flat, axis=1, stable=True, descending=True)
    ranks = jnp.argsort(order, axis=1).astype(jnp.int32)
    return ranks.reshape(maps.shape)


def _baseline(images, baseline: str):
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    return jnp.zeros_like(images) if baseline == "zeros" else blurred_images(images)


def causal_curves(apply_fn: Callable[[jax.Array], jax.Array], images, scoremaps, labels,
                  mode: str, *, steps: int = DEFAULT_STEPS, baseline: str | None = None,
                  chunk_size: int = 4):
    """Every image's deletion or insertion curve (module docstring).

    Args:
      apply_fn: ``images [n,H,W,C] -> logits [n,M]`` (the model, variables bound).
      images: float ``[B,H,W,C]``; scoremaps: float ``[B,H,W]`` (maps of class ``labels``).
      labels: int ``[B]``, the explained class.
      mode: "deletion" | "insertion" (static).
      steps: static ``S``; baseline: "zeros" | "blur" (default ``DEFAULT_BASELINES[mode]``).
      chunk_size: curve points per forward pass (``chunk_size * B`` images at once).

    Returns:
      float32 ``[J + 1, B]``: the class score at each point ``k_j`` (:func:`causal_points`).
    """
    mode = _check_mode(mode)
    images = _checks.check_images(images)
    scoremaps = _checks.check_maps_like(scoremaps, images, "scoremaps").astype(jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    points = causal_points(images.shape[1] * images.shape[2], steps)
    base = _baseline(images, DEFAULT_BASELINES[mode] if baseline is None else baseline)
    ranks = pixel_ranks(scoremaps)
    first, second = (base, images) if mode == "deletion" else (images, base)
    b = images.shape[0]

    def scores(counts):                                                  # [c] -> [c, B]
        top = (ranks[None] < counts[:, None, None, None])[..., None]      # [c, B, H, W, 1]
        x = jnp.where(top, first[None], second[None])
        logits = apply_fn(x.reshape((-1,) + images.shape[1:]))
        return class_scores(logits, jnp.tile(labels, counts.shape[0])).reshape(-1, b)

    chunks = -(-len(points) // chunk_size)
    padded = np.pad(points, (0, chunks * chunk_size - len(points)), mode="edge")
    curves = lax.map(scores, jnp.asarray(padded.reshape(chunks, chunk_size), jnp.int32))
    return curves.reshape(-1, b)[:len(points)]


@flax.struct.dataclass
class CausalCounts:
    """Streaming deletion or insertion curves.

    Attributes:
      curve: float32 ``[J + 1]``: Σ over images of the class score at each point.
      count: int32 ``[]``: images counted.
      fractions: static tuple of ``J + 1`` fractions ``t_j`` of pixels changed.
      mode: static "deletion" | "insertion".
    """
    curve: jax.Array
    count: jax.Array
    fractions: tuple = flax.struct.field(pytree_node=False, default=(0.0, 1.0))
    mode: str = flax.struct.field(pytree_node=False, default="deletion")

    @classmethod
    def empty(cls, num_pixels: int, mode: str = "deletion",
              steps: int = DEFAULT_STEPS) -> CausalCounts:
        """Zero counts for images of ``num_pixels = H W`` pixels."""
        points = causal_points(num_pixels, steps)
        return cls(curve=jnp.zeros(len(points), jnp.float32), count=jnp.zeros((), jnp.int32),
                   fractions=tuple(float(f) for f in points / points[-1]),
                   mode=_check_mode(mode))

    def merge(self, other: CausalCounts) -> CausalCounts:
        return jax.tree.map(jnp.add, self, other)

    def add(self, curves, valid=None) -> CausalCounts:
        """Adds images given their curves, float ``[J + 1, B]`` (:func:`causal_curves`)."""
        curves = jnp.asarray(curves, jnp.float32)
        if curves.ndim != 2 or curves.shape[0] != len(self.fractions):
            raise ValueError(f"curves must have shape [J + 1, B] = ({len(self.fractions)}, B), "
                             f"got {curves.shape}")
        valid = _checks.check_valid(valid, curves.shape[1])
        return self.merge(self.replace(
            curve=jnp.sum(jnp.where(valid[None], curves, 0.0), axis=1),
            count=jnp.sum(valid, dtype=jnp.int32)))

    def result(self) -> dict:
        """``auc`` (mean over images of the trapezoid AUC) and ``curve`` ``[J + 1]`` (the mean
        curve); NaN when nothing was counted."""
        mean = self.curve / self.count.astype(jnp.float32)
        return {"auc": jnp.trapezoid(mean, jnp.asarray(self.fractions, jnp.float32)),
                "curve": mean}


def causal_counts(apply_fn: Callable[[jax.Array], jax.Array], images, scoremaps, labels,
                  mode: str, valid=None, *, steps: int = DEFAULT_STEPS,
                  baseline: str | None = None, chunk_size: int = 4) -> CausalCounts:
    """Deletion or insertion counts of one batch (:func:`causal_curves`; ``valid`` optional
    bool ``[B]``): :class:`CausalCounts`."""
    images = _checks.check_images(images)
    curves = causal_curves(apply_fn, images, scoremaps, labels, mode, steps=steps,
                           baseline=baseline, chunk_size=chunk_size)
    return CausalCounts.empty(images.shape[1] * images.shape[2], mode, steps).add(curves, valid)
