"""The second-order gradient maps: ShapleyCAM (gradient and Hessian-vector product).

``H A`` is the product of the Hessian of the target logit with respect to the layer's
activations with the activations themselves, from ``jax.jvp`` of the vjp (forward over reverse):
no Hessian is formed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER


def gradient_and_hvp(model, variables, images, targets, layer, num_classes):
    """``(A, G, H A)`` at ``layer``, each float32 ``[B, h, w, K]``, of checked inputs.

    ``G[b] = ∂y_b/∂A[b]`` and ``(H A)[b] = Σ ∂²y_b/∂A[b]∂A[b] · A[b]`` for ``y_b`` the target
    logit (images are independent in evaluation mode, so the Hessian of ``Σ_b y_b`` is block
    diagonal). At ``"features"`` the perturbation sits at the GAP output (``core``): ``A``'s
    image there is its mean over positions, and ``G`` and ``H A`` are spread back through the
    mean's transpose (:func:`core.spread_pooled`).
    """
    logits, a = core.forward_at_layer(model, variables, images, layer)
    a = a.astype(jnp.float32)
    _, _, delta_shape = core.layer_shapes(model, variables, images, layer)
    delta = jnp.zeros(delta_shape.shape, delta_shape.dtype)
    tangent = jnp.mean(a, axis=(1, 2)) if layer == DEFAULT_LAYER else a
    cotangent = core.target_cotangent(targets, logits, num_classes)

    def grad_at(d):
        _, pullback = jax.vjp(lambda e: core.forward_at_layer(
            model, variables, images, layer, delta=e)[0].astype(jnp.float32), d)
        return pullback(cotangent)[0]

    g, hvp = jax.jvp(grad_at, (delta,), (tangent.astype(delta.dtype),))
    g, hvp = g.astype(jnp.float32), hvp.astype(jnp.float32)
    if layer == DEFAULT_LAYER:
        g, hvp = core.spread_pooled(g, a.shape), core.spread_pooled(hvp, a.shape)
    return a, g, hvp


def shapley_weights(g, hvp):
    """``w_k = mean_ij (G - ½ H A)_ijk`` -> ``[B, K]``."""
    return jnp.mean(g - 0.5 * hvp, axis=(1, 2))


@registry.register("shapleycam", "ShapleyCAM", options=("eigen_smooth",), callable_targets=False)
def shapleycam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
               relu: bool = True, eigen_smooth: bool = False):
    """ShapleyCAM (Cai et al., ICLR 2025, "CAMs as Shapley value-based explainers", eq. 9).

    ``w_k = (1/Z) Σ_ij (∂y^c/∂A - ½ H A)_ijk`` with ``H = ∂²y^c/∂A²`` (the second-order
    Taylor term of the Shapley value of each channel) and ``L = ReLU(Σ_k w_k A_k)``, as
    pytorch-grad-cam's ``ShapleyCAM`` with the logit target. On a network that is piecewise
    linear after the layer (ReLU, max-pooling, BatchNorm in evaluation mode, linear head)
    ``H A = 0`` almost everywhere and ShapleyCAM equals Grad-CAM.

    Args and returns as :func:`~.gradient.gradcam`.
    """
    images, layer, targets, num_classes = core.prepare(model, variables, images, targets, layer)
    a, g, hvp = gradient_and_hvp(model, variables, images, targets, layer, num_classes)
    return core.weighted_sum(shapley_weights(g, hvp), a, relu,
                             core.check_flag(eigen_smooth, "eigen_smooth"))
