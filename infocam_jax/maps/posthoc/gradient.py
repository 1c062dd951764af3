"""The gradient maps: Grad-CAM, HiResCAM, Grad-CAM++, XGrad-CAM, LayerCAM.

Each is one *weight rule* ``(A, G) -> W`` with ``W`` broadcastable to ``A [B, h, w, K]``
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
"""
from __future__ import annotations

import jax.numpy as jnp

from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER

GRADCAMPP_EPS = 1e-6
XGRADCAM_EPS = 1e-7


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


def _layercam_weights(a, g):
    """``W = [G]_+`` element-wise -> ``[B, h, w, K]``."""
    del a
    return jnp.maximum(g, 0.0)


@registry.register("gradcam", "Grad-CAM")
def gradcam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
            relu: bool = True):
    """Grad-CAM (Selvaraju et al., ICCV 2017, eqs. 1-2).

    ``α_k^c = (1/Z) Σ_ij ∂y^c/∂A_ijk`` and ``L^c = ReLU(Σ_k α_k^c A_k)``.

    On the GAP features ``α_k = W[k, y]/Z``, so ``gradcam = ReLU(CAM)/Z`` (``relu=False``:
    ``CAM/Z``): a positive multiple of CAM wherever CAM > 0 and zero elsewhere.

    Args:
      model, variables, images, targets, layer: as in :func:`activations_and_gradients`.
      relu: apply the final ReLU (default True, as the paper and pytorch-grad-cam).

    Returns:
      float32 ``[B, h, w]`` at the layer's resolution.
    """
    return core.gradient_map(_gradcam_weights, model, variables, images, targets, layer, relu)


@registry.register("hirescam", "HiResCAM")
def hirescam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """HiResCAM (Draelos & Carin, 2020, "Use HiResCAM instead of Grad-CAM", eq. 5).

    ``L^c = ReLU(Σ_k ∂y^c/∂A_k ⊙ A_k)``: the element-wise product instead of Grad-CAM's
    spatially averaged gradient.

    On the GAP features the gradient is ``W[k,y]/Z`` at every position, so HiResCAM equals
    Grad-CAM there: ``ReLU(CAM)/Z``; before the ReLU exactly ``CAM/Z``, and its sum over
    positions is the target logit minus the bias.

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_hirescam_weights, model, variables, images, targets, layer, relu)


@registry.register("gradcampp", "Grad-CAM++")
def gradcampp(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
              relu: bool = True):
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
    return core.gradient_map(_gradcampp_weights, model, variables, images, targets, layer, relu)


@registry.register("xgradcam", "XGrad-CAM")
def xgradcam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """XGrad-CAM (Fu et al., BMVC 2020, eq. 14).

    ``α_k^c = Σ_ij (A_ijk / Σ_ab A_abk) ∂y^c/∂A_ijk``, ``L = ReLU(Σ_k α_k A_k)``
    (``eps = 1e-7`` added to ``Σ_ab A_abk`` as pytorch-grad-cam).

    On the GAP features ``α_k = (W[k,y]/Z) · S_k/(S_k + eps)``: Grad-CAM's weight for every
    channel that is not zero everywhere, so ``xgradcam = ReLU(CAM)/Z`` up to the eps.

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_xgradcam_weights, model, variables, images, targets, layer, relu)


@registry.register("layercam", "LayerCAM")
def layercam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """LayerCAM (Jiang et al., IEEE TIP 2021, eqs. 5-6).

    ``L^c = ReLU(Σ_k ReLU(∂y^c/∂A_k) ⊙ A_k)``: element-wise weights, negative gradients
    dropped.

    On the GAP features ``layercam = ReLU(Σ_k [W[k,y]]_+ A_k)/Z`` (the ReLU is then a no-op on
    non-negative features): the CAM of the positive part of the class's weight column.

    Args and returns as :func:`gradcam`.
    """
    return core.gradient_map(_layercam_weights, model, variables, images, targets, layer, relu)
