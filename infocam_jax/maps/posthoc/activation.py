"""The activation maps: functions of the layer's activations alone (no gradient, no class).

Eigen-CAM, KPCA-CAM, FEM, and RandomCAM (random channel weights: a baseline).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER


@registry.register("eigencam", "Eigen-CAM", family="activation")
def eigencam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, eq. 5-6).

    ``L = ReLU(X v_1)`` with ``X [hw, K]`` the layer's activations centred over positions and
    ``v_1`` its first right singular vector (first principal component of the channel vectors),
    as pytorch-grad-cam's ``get_2d_projection``. The sign of ``v_1`` is fixed so that ``X v_1``
    correlates positively with the channel sum (pytorch-grad-cam keeps LAPACK's arbitrary
    sign). ``targets`` are checked but do not enter: Eigen-CAM is class-agnostic.

    Relation to CAM: CAM weights the channels with the class column ``W[:, y]``; Eigen-CAM
    with ``v_1`` after removing each channel's spatial mean, i.e. it is ``CAM`` of a
    class-independent "weight column" ``v_1`` minus the constant ``mean_ij(A) · v_1``.

    Args and returns as :func:`gradcam`.
    """
    return _activation_map(core.first_component_projection, model, variables, images, targets,
                           layer, relu)


def _activation_map(fn, model, variables, images, targets, layer, relu):
    """``ReLU(fn(A))`` of the layer's float32 activations ``A [B, h, w, K]``; NaN rows for
    out-of-range targets (the traced-target guard)."""
    images, layer, targets, num_classes = core.prepare(model, variables, images, targets, layer)
    _, activation = core.forward_at_layer(model, variables, images, layer)
    maps = fn(activation.astype(jnp.float32))
    maps = jnp.maximum(maps, 0.0) if relu else maps
    return core.nan_where_invalid(maps, targets, num_classes)


KPCA_KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")
# scikit-learn's KernelPCA defaults (pytorch-grad-cam passes only kernel and gamma).
KPCA_DEGREE = 3
KPCA_COEF0 = 1.0


def kernel_matrix(x, kernel: str, gamma: float):
    """scikit-learn's ``pairwise_kernels(x, x)``: ``x [B, n, K]`` -> ``[B, n, n]``.

    linear ``x x^T``; poly ``(γ x x^T + 1)^3``; rbf ``exp(-γ |x_i - x_j|²)`` (zero self-distance);
    sigmoid ``tanh(γ x x^T + 1)``; cosine: ``x x^T`` of the unit rows (zero rows stay zero).
    """
    if kernel == "cosine":
        norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
        x = x / jnp.where(norm > 0, norm, 1.0)
    dot = jnp.einsum("bnk,bmk->bnm", x, x, precision=core.HIGHEST)
    if kernel in ("linear", "cosine"):
        return dot
    if kernel == "poly":
        return (gamma * dot + KPCA_COEF0) ** KPCA_DEGREE
    if kernel == "sigmoid":
        return jnp.tanh(gamma * dot + KPCA_COEF0)
    sq = jnp.diagonal(dot, axis1=1, axis2=2)
    dist = jnp.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * dot, 0.0)
    dist = jnp.where(jnp.eye(dot.shape[-1], dtype=bool), 0.0, dist)
    return jnp.exp(-gamma * dist)


def kernel_first_component(activation, kernel: str, gamma):
    """Kernel PCA's first component score of each position: ``[B, h, w, K]`` -> ``[B, h, w]``.

    As scikit-learn's ``KernelPCA(n_components=1).fit_transform`` of the positions' channel
    vectors centred over positions (pytorch-grad-cam's ``get_2d_projection_kernel``): the
    kernel matrix (:func:`kernel_matrix`, ``γ = 1/K`` when None) double-centred
    (``K - 1K/n - K1/n + 1K1/n²``), its top eigenvector ``u`` with the sign that makes its
    largest-magnitude entry positive (scikit-learn's ``svd_flip``), times ``sqrt(λ_1)``.
    """
    b, h, w, k = activation.shape
    x = activation.reshape(b, h * w, k)
    x = x - jnp.mean(x, axis=1, keepdims=True)
    gram = kernel_matrix(x, kernel, 1.0 / k if gamma is None else gamma)
    gram = (gram - jnp.mean(gram, axis=1, keepdims=True) - jnp.mean(gram, axis=2, keepdims=True)
            + jnp.mean(gram, axis=(1, 2), keepdims=True))
    values, vectors = jnp.linalg.eigh(gram)
    u = vectors[..., -1]
    pivot = jnp.take_along_axis(u, jnp.argmax(jnp.abs(u), axis=-1)[:, None], axis=-1)
    u = u * jnp.where(pivot < 0, -1.0, 1.0)
    return (u * jnp.sqrt(jnp.maximum(values[..., -1:], 0.0))).reshape(b, h, w)


@registry.register("kpcacam", "KPCA-CAM", options=("kernel", "gamma"), family="activation")
def kpcacam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
            relu: bool = True, kernel: str = "sigmoid", gamma=None):
    """KPCA-CAM (Karmani et al., 2024, "KPCA-CAM: Visual explainability of deep computer vision
    models using kernel PCA"): Eigen-CAM with kernel PCA.

    ``L = ReLU(score of the first kernel principal component)`` of the positions' channel
    vectors (:func:`kernel_first_component`), as pytorch-grad-cam's ``KPCA_CAM``. Class-agnostic
    (``targets`` are checked, not used).

    Args:
      model, variables, images, targets, layer, relu: as :func:`eigencam`.
      kernel: one of ``KPCA_KERNELS`` (scikit-learn's names; default ``"sigmoid"``, the peer's).
      gamma: kernel coefficient > 0, or None for ``1/K``.

    Returns:
      float32 ``[B, h, w]``.
    """
    if kernel not in KPCA_KERNELS:
        raise ValueError(f"kernel must be one of {KPCA_KERNELS}, got {kernel!r}")
    if gamma is not None and (isinstance(gamma, (bool, np.bool_))
                              or not isinstance(gamma, (int, float, np.number)) or not gamma > 0):
        raise ValueError(f"gamma must be None or a number > 0, got {gamma!r}")
    fn = functools.partial(kernel_first_component, kernel=kernel,
                           gamma=None if gamma is None else float(gamma))
    return _activation_map(fn, model, variables, images, targets, layer, relu)


def fem_weights(activation, k: float):
    """FEM's channel weights ``[B, K]``: the fraction of positions with
    ``A_ijk > mean_ij(A_k) + k · std_ij(A_k)`` (population std: the k-sigma rule)."""
    mean = jnp.mean(activation, axis=(1, 2), keepdims=True)
    std = jnp.std(activation, axis=(1, 2), keepdims=True)
    return jnp.mean((activation > mean + k * std).astype(jnp.float32), axis=(1, 2))


@registry.register("fem", "FEM", options=("k",), family="activation")
def fem(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER, relu: bool = True,
        k: float = 2.0):
    """FEM, Feature Explanation Method (Fuad et al., IPTA 2020, eqs. 1-3).

    ``w_k = mean_ij [A_ijk > μ_k + k σ_k]`` (μ, σ over positions) and ``L = ReLU(Σ_k w_k A_k)``,
    as pytorch-grad-cam's ``FEM``. Class-agnostic (``targets`` are checked, not used).

    Args:
      model, variables, images, targets, layer, relu: as :func:`eigencam`.
      k: the number of standard deviations of the threshold (default 2, the peer's).

    Returns:
      float32 ``[B, h, w]``.
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.number)):
        raise ValueError(f"k must be a real number, got {k!r}")

    def fn(a):
        return core.weighted_sum(fem_weights(a, float(k)), a, relu=False)
    return _activation_map(fn, model, variables, images, targets, layer, relu)


def random_weights(key, batch: int, channels: int):
    """RandomCAM's channel weights: ``U(-1, 1)`` draws ``[B, K]`` from ``key``."""
    return jax.random.uniform(key, (batch, channels), jnp.float32, -1.0, 1.0)


@registry.register("randomcam", "RandomCAM", options=("key", "eigen_smooth"),
                   family="activation")
def randomcam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
              relu: bool = True, key=0, eigen_smooth: bool = False):
    """RandomCAM (pytorch-grad-cam's ``RandomCAM``): channel weights drawn from ``U(-1, 1)``.

    ``L = ReLU(Σ_k w_k A_k)``, ``w [B, K]`` from :func:`random_weights`: a baseline that any
    map should beat on the localisation and faithfulness metrics. Seeded: the same ``key``
    gives the same map. Class-agnostic (``targets`` are checked, not used).

    Args:
      model, variables, images, targets, layer, relu, eigen_smooth: as :func:`gradcam`.
      key: an int seed (static, default 0) or a JAX PRNG key.

    Returns:
      float32 ``[B, h, w]``.
    """
    key = core.check_key(key)
    eigen_smooth = core.check_flag(eigen_smooth, "eigen_smooth")

    def fn(a):
        weights = random_weights(key, a.shape[0], a.shape[-1])
        return core.weighted_sum(weights, a, relu=False, eigen_smooth=eigen_smooth)
    return _activation_map(fn, model, variables, images, targets, layer, relu)
