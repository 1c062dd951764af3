"""The gradient maps: Grad-CAM, HiResCAM, Grad-CAM++, XGrad-CAM, LayerCAM.

Each of the first five is one *weight rule* ``(A, G) -> W`` with ``W`` broadcastable to ``A [B, h, w, K]``
(``[B, K]`` channel weights or ``[B, h, w, K]`` element-wise weights), applied by the shared
core: ``L = ReLU(Σ_k W_k ⊙ A_k)`` (:func:`core.gradient_map`; ``relu=False`` drops the ReLU).
``G = ∂y^c/∂A`` is the gradient of the target's logit (pre-softmax, as pytorch-grad-cam's
``ClassifierOutputTarget``); ``Σ_ij`` sums over the ``h x w`` positions, ``Z = h·w``.

Relations to CAM on a GAP network (``layer="features"``, ``logits = GAP(A) @ W + b``; then
``G[b,i,j,k] = W[k, y]/Z`` at every position, ``CAM = Σ_k W[k,y] A_k``; tested in
``tests/test_posthoc.py``):

* Grad-CAM:  ``gradcam = ReLU(CAM) / Z`` (``relu=False``: ``CAM / Z``);
* HiResCAM:  the same, ``ReLU(CAM) / Z``, position by position;
* XGrad-CAM: ``ReLU(Σ_k W[k,y] · S_k/(S_k + 1e-7) · A_k) / Z`` with ``S_k = Σ_ij A_k``: CAM / Z
  up to the ``eps`` (exactly CAM / Z on channels that are zero everywhere, which add nothing);
* LayerCAM:  ``ReLU(Σ_k [W[k,y]]_+ A_k) / Z``: CAM of the positive part of the weight column;
* Grad-CAM++: channel weights ``[W[k,y]]_+ / (2 + W[k,y]·GAP(A)_k)`` (up to the ``eps``): not
  proportional to CAM;

The variants of pytorch-grad-cam 1.5.7 and torch-cam 0.5.0 beside them: Grad-CAM element-wise,
Eigen-Grad-CAM, Seg-Eigen-CAM, FinerCAM and Smooth Grad-CAM++ (below).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc import targets as targets_lib
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER

GRADCAMPP_EPS = 1e-6
XGRADCAM_EPS = 1e-7
FINERCAM_EPS = 1e-9
SMOOTHGRADCAMPP_EPS = 1e-8
# Options of the maps that offer pytorch-grad-cam's eigen_smooth.
SMOOTH = ("eigen_smooth",)


def _gradcam_weights(a, g):
    """``α_k = (1/Z) Σ_ij G_ijk`` -> ``[B, K]``."""
    del a
    return jnp.mean(g, axis=(1, 2))


def _hirescam_weights(a, g):
    """``W = G`` element-wise -> ``[B, h, w, K]``."""
    del a
    return g


def _gradcampp_weights(a, g):
    """``w_k = Σ_ij α_ijk [G_ijk]_+``, ``α = G² / (2G² + S_k G³ + eps)`` (0 where G = 0)."""
    g2 = g * g
    s = jnp.sum(a, axis=(1, 2), keepdims=True)
    alpha = g2 / (2.0 * g2 + s * g2 * g + GRADCAMPP_EPS)
    alpha = jnp.where(g != 0, alpha, 0.0)
    return jnp.sum(jnp.maximum(g, 0.0) * alpha, axis=(1, 2))


def _xgradcam_weights(a, g):
    """``α_k = Σ_ij (A_ijk / (S_k + eps)) G_ijk`` -> ``[B, K]``."""
    s = jnp.sum(a, axis=(1, 2), keepdims=True)
    return jnp.sum(g * a / (s + XGRADCAM_EPS), axis=(1, 2))


def _gradcamew_weights(a, g):
    """``W = G · [G A > 0]`` element-wise, so that ``W ⊙ A = [G ⊙ A]_+`` -> ``[B, h, w, K]``
    (written ``G A <= 0 -> 0`` so that a NaN gradient stays NaN)."""
    return jnp.where(g * a <= 0, 0.0, g)


def _segeigencam_weights(a, g):
    """``W = |G|`` element-wise -> ``[B, h, w, K]``."""
    del a
    return jnp.abs(g)


def _layercam_weights(a, g):
    """``W = [G]_+`` element-wise -> ``[B, h, w, K]``."""
    del a
    return jnp.maximum(g, 0.0)


@registry.register("gradcam", "Grad-CAM", options=SMOOTH)
def gradcam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
            relu: bool = True, eigen_smooth: bool = False):
    """Grad-CAM (Selvaraju et al., ICCV 2017, eqs. 1-2).

    ``α_k^c = (1/Z) Σ_ij ∂y^c/∂A_ijk`` and ``L^c = ReLU(Σ_k α_k^c A_k)``.

    On the GAP features ``α_k = W[k, y]/Z``, so ``gradcam = ReLU(CAM)/Z`` (``relu=False``:
    ``CAM/Z``): a positive multiple of CAM wherever CAM > 0 and zero elsewhere.

    Args:
      model, variables, images, targets, layer: as in :func:`activations_and_gradients`.
      relu: apply the final ReLU (default True, as the paper and pytorch-grad-cam).
      eigen_smooth: project the weighted activations ``α_k A_k`` on their first principal
        component instead of summing them (pytorch-grad-cam's ``eigen_smooth``;
        :func:`core.weighted_sum`).

    Returns:
      float32 ``[B, h, w]`` at the layer's resolution.
    """
    return core.gradient_map(_gradcam_weights, model, variables, images, targets, layer, relu,
                             eigen_smooth)


@registry.register("hirescam", "HiResCAM", options=SMOOTH)
def hirescam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True, eigen_smooth: bool = False):
    """HiResCAM (Draelos & Carin, 2020, "Use HiResCAM instead of Grad-CAM", eq. 5).

    ``L^c = ReLU(Σ_k ∂y^c/∂A_k ⊙ A_k)``: the element-wise product instead of Grad-CAM's
    spatially averaged gradient.

    On the GAP features the gradient is ``W[k,y]/Z`` at every position, so HiResCAM equals
    Grad-CAM there: ``ReLU(CAM)/Z``; before the ReLU exactly ``CAM/Z``, and its sum over
    positions is the target logit minus the bias.

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_hirescam_weights, model, variables, images, targets, layer, relu,
                             eigen_smooth)


@registry.register("gradcampp", "Grad-CAM++", options=SMOOTH)
def gradcampp(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
              relu: bool = True, eigen_smooth: bool = False):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, eqs. 10 and 19).

    ``w_k^c = Σ_ij α_ijk^c ReLU(∂y^c/∂A_ijk)`` with
    ``α_ijk = g² / (2 g² + Σ_ab A_abk · g³)``, ``g = ∂y^c/∂A_ijk`` (eq. 19: the higher
    derivatives of ``exp(y^c)`` written with powers of the first one), ``L = ReLU(Σ_k w_k A_k)``.
    As pytorch-grad-cam: ``eps = 1e-6`` in the denominator and ``α = 0`` where ``g = 0``.

    On the GAP features (``g = W[k,y]/Z``): ``w_k = [W[k,y]]_+ · Z/(2 + S_k W[k,y]/Z) / Z``,
    i.e. ``w_k = [W[k,y]]_+ / (2 + W[k,y] · GAP(A)_k)`` up to the eps: channels with a positive
    weight, damped by their pooled activation. Not a multiple of CAM.

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_gradcampp_weights, model, variables, images, targets, layer, relu,
                             eigen_smooth)


@registry.register("xgradcam", "XGrad-CAM", options=SMOOTH)
def xgradcam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True, eigen_smooth: bool = False):
    """XGrad-CAM (Fu et al., BMVC 2020, eq. 14).

    ``α_k^c = Σ_ij (A_ijk / Σ_ab A_abk) ∂y^c/∂A_ijk``, ``L = ReLU(Σ_k α_k A_k)``
    (``eps = 1e-7`` added to ``Σ_ab A_abk`` as pytorch-grad-cam).

    On the GAP features ``α_k = (W[k,y]/Z) · S_k/(S_k + eps)``: Grad-CAM's weight for every
    channel that is not zero everywhere, so ``xgradcam = ReLU(CAM)/Z`` up to the eps.

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_xgradcam_weights, model, variables, images, targets, layer, relu,
                             eigen_smooth)


@registry.register("layercam", "LayerCAM", options=SMOOTH)
def layercam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True, eigen_smooth: bool = False):
    """LayerCAM (Jiang et al., IEEE TIP 2021, eqs. 5-6).

    ``L^c = ReLU(Σ_k ReLU(∂y^c/∂A_k) ⊙ A_k)``: element-wise weights, negative gradients
    dropped.

    On the GAP features ``layercam = ReLU(Σ_k [W[k,y]]_+ A_k)/Z`` (the ReLU is then a no-op on
    non-negative features): the CAM of the positive part of the class's weight column.

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_layercam_weights, model, variables, images, targets, layer, relu,
                             eigen_smooth)


@registry.register("gradcamew", "Grad-CAM element-wise", options=SMOOTH)
def gradcamew(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
              relu: bool = True, eigen_smooth: bool = False):
    """Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``).

    ``L^c = ReLU(Σ_k ReLU(∂y^c/∂A_k ⊙ A_k))``: HiResCAM with every element-wise product
    rectified before the channel sum (weight rule ``W = G · [G A > 0]``).

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_gradcamew_weights, model, variables, images, targets, layer, relu,
                             eigen_smooth)


@registry.register("eigengradcam", "Eigen-Grad-CAM")
def eigengradcam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
                 relu: bool = True):
    """Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``: Eigen-CAM of ``G ⊙ A``).

    ``L = ReLU(X v_1)`` with ``X [hw, K]`` the element-wise products ``∂y^c/∂A ⊙ A`` centred
    over positions and ``v_1`` its first right singular vector
    (:func:`core.first_component_projection`: sign fixed so that ``X v_1`` correlates
    positively with the channel sum; pytorch-grad-cam keeps LAPACK's arbitrary sign).

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_hirescam_weights, model, variables, images, targets, layer, relu,
                             eigen_smooth=True)


@registry.register("segeigencam", "Seg-Eigen-CAM")
def segeigencam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
                relu: bool = True):
    """Seg-Eigen-CAM (Chung & Ying, Appl. Sci. 2025, eqs. 10-13).

    ``P = X v_1`` for ``X`` the element-wise products ``|∂y^c/∂A| ⊙ A`` centred over positions
    (eq. 10-12), its sign chosen so that ``|max P| >= |min P|`` (eq. 13: the salient side
    positive), ``L = ReLU(P)``. As pytorch-grad-cam's ``SegEigenCAM``; the sign rule makes the
    map independent of the singular vector's sign.

    Args and returns as :func:`gradcam`.
    """
    proj = core.gradient_map(_segeigencam_weights, model, variables, images, targets, layer,
                             relu=False, eigen_smooth=True)
    proj = max_positive(proj)
    return jnp.maximum(proj, 0.0) if relu else proj


def max_positive(proj):
    """``[B, h, w]`` maps, each negated where ``|min| > |max|`` (Seg-Eigen-CAM's eq. 13)."""
    flip = jnp.abs(jnp.min(proj, axis=(1, 2))) > jnp.abs(jnp.max(proj, axis=(1, 2)))
    return jnp.where(flip[:, None, None], -proj, proj)


def check_comparison_ranks(ranks, num_classes):
    """``None`` -> ``(1, 2, 3)`` cut to ``M - 1`` classes (pytorch-grad-cam's default); else a
    non-empty tuple of distinct ints in ``[1, M)``."""
    if ranks is None:
        return (1, 2, 3)[:max(num_classes - 1, 0)]
    if (not isinstance(ranks, (tuple, list)) or not ranks or len(set(ranks)) != len(ranks)
            or any(isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer))
                   or not 1 <= r < num_classes for r in ranks)):
        raise ValueError(f"comparison_ranks must be a non-empty tuple of distinct ints in "
                         f"[1, {num_classes}) (M = the model's number of classes), got {ranks!r}")
    return tuple(int(r) for r in ranks)


def finer_objective(logits, *, targets, ranks, alpha):
    """FinerCAM's score ``[B]`` (pytorch-grad-cam's ``FinerWeightedTarget``).

    ``s = Σ_j p_j (y_t - α y_j) / (Σ_j p_j + 1e-9)`` over the comparison classes ``j``: the
    classes whose logits are the ``ranks``-th closest to ``y_t`` (rank 0 is the target itself;
    chosen on the logits, not differentiated), ``p = softmax(y)`` (differentiated, as the peer).
    """
    y_t = jnp.take_along_axis(logits, targets[:, None], axis=-1)
    distance = jax.lax.stop_gradient(jnp.abs(logits - y_t))
    order = jnp.argsort(distance, axis=-1, stable=True)
    others = order[:, jnp.asarray(ranks)]                                   # [B, R]
    p = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), others, axis=-1)
    y_j = jnp.take_along_axis(logits, others, axis=-1)
    return jnp.sum(p * (y_t - alpha * y_j), axis=-1) / (jnp.sum(p, axis=-1) + FINERCAM_EPS)


@registry.register("finercam", "FinerCAM", options=("comparison_ranks", "alpha") + SMOOTH,
                   callable_targets=False)
def finercam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True, comparison_ranks=None, alpha: float = 1.0,
             eigen_smooth: bool = False):
    """FinerCAM (Zhang et al., CVPR 2025): Grad-CAM of a logit difference to similar classes.

    Grad-CAM (:func:`gradcam`) with the gradient of :func:`finer_objective` instead of the
    target logit: ``G = ∂s/∂A``, ``s = Σ_j p_j (y_t - α y_j) / (Σ_j p_j + 1e-9)`` over the
    classes ``j`` ranked ``comparison_ranks`` by ``|y_j - y_t|`` (the most similar classes).
    ``alpha = 0`` gives Grad-CAM of ``y_t`` (the weights ``p_j`` still differentiated, as in
    pytorch-grad-cam's ``FinerCAM`` with ``target_idx = targets``).

    Args:
      model, variables, images, targets, layer, relu, eigen_smooth: as :func:`gradcam`.
      comparison_ranks: tuple of ranks in ``[1, M)`` (static); None: ``(1, 2, 3)`` cut to
        ``M - 1`` classes.
      alpha: comparison strength.

    Returns:
      float32 ``[B, h, w]``.
    """
    _, _, _, num_classes = core.prepare(model, variables, images, targets, layer)
    ranks = check_comparison_ranks(comparison_ranks, num_classes)
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.number)):
        raise ValueError(f"alpha must be a real number, got {alpha!r}")
    objective = functools.partial(finer_objective, ranks=ranks, alpha=float(alpha))
    return core.gradient_map(_gradcam_weights, model, variables, images, targets, layer, relu,
                             eigen_smooth, objective=objective)


def smooth_gradcampp_weights(a, g, g_last):
    """Smooth Grad-CAM++ channel weights ``[B, K]`` (torch-cam's ``SmoothGradCAMpp``).

    ``w_k = Σ_ij α_ijk [G_last]_+``, ``α = D2 / (2 D2 + Σ_ab (D3 ⊙ A)_k + 1e-8)`` with
    ``D2, D3 [B, h, w, K]`` the means of ``G²`` and ``G³`` over the noisy samples (``g [n, B, h,
    w, K]``) and ``A`` the clean activations.
    """
    d2 = jnp.mean(g * g, axis=0)
    d3 = jnp.mean(g * g * g, axis=0)
    alpha = d2 / (2.0 * d2 + jnp.sum(d3 * a, axis=(1, 2), keepdims=True) + SMOOTHGRADCAMPP_EPS)
    return jnp.sum(alpha * jnp.maximum(g_last, 0.0), axis=(1, 2))


def check_noise(num_samples, std):
    if (isinstance(num_samples, (bool, np.bool_)) or not isinstance(num_samples, (int, np.integer))
            or num_samples < 1):
        raise ValueError(f"num_samples must be a Python int >= 1 (static), got {num_samples!r}")
    if (isinstance(std, (bool, np.bool_)) or not isinstance(std, (int, float, np.number))
            or not std >= 0):
        raise ValueError(f"std must be a number >= 0, got {std!r}")
    return int(num_samples), float(std)


@registry.register("smoothgradcampp", "Smooth Grad-CAM++",
                   options=("num_samples", "std", "key"), callable_targets=False)
def smoothgradcampp(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
                    relu: bool = True, num_samples: int = 4, std: float = 0.3, key=0):
    """Smooth Grad-CAM++ (Omeiza et al., 2019, arXiv:1908.01224) as torch-cam 0.5.0 computes it.

    Grad-CAM++ with the second and third derivatives replaced by the means of ``G²`` and
    ``G³`` over ``n`` noisy copies ``x + N(0, std²)`` of each image
    (:func:`smooth_gradcampp_weights`; torch-cam's "personal correction": ``D2``, not ``D1``, in
    the numerator). As torch-cam, the rectified gradient of the weights and the activations
    of the map are those of the last noisy copy: ``L = ReLU(Σ_k w_k A_k^{(n)})``; ``α`` uses
    the clean activations. The ``n`` copies run as one batch of ``n·B`` images.

    Args:
      model, variables, images, targets, layer, relu: as :func:`gradcam`.
      num_samples: ``n`` (static int >= 1, default 4 as torch-cam).
      std: the noise's standard deviation (default 0.3 as torch-cam).
      key: an int seed (static, default 0) or a JAX PRNG key; the noise is
        ``std · jax.random.normal(key, (n, B, H, W, C))``.

    Returns:
      float32 ``[B, h, w]``.
    """
    images, layer, targets, num_classes = core.prepare(model, variables, images, targets, layer)
    num_samples, std = check_noise(num_samples, std)
    key = core.check_key(key)
    noise = std * jax.random.normal(key, (num_samples,) + images.shape, jnp.float32)
    noisy = (images[None] + noise.astype(images.dtype)).reshape((-1,) + images.shape[1:])
    logits, a = core.forward_at_layer(model, variables, images, layer)
    targets = targets_lib.resolve(targets, logits)
    _, a_noisy, g = core.layer_gradients(model, variables, noisy, jnp.tile(targets, num_samples),
                                         layer, num_classes)
    g = g.reshape((num_samples,) + a.shape)
    weights = smooth_gradcampp_weights(a.astype(jnp.float32), g, g[-1])
    return core.weighted_sum(weights, a_noisy[-images.shape[0]:], relu)
