"""Guided backpropagation and Guided Grad-CAM: image-resolution gradients, ``[B, H, W, C]``.

Guided backpropagation (Springenberg et al., ICLR-W 2015, §3.4, eq. in Fig. 1) passes, at every
ReLU of the backbone, only positive gradients at positive inputs:
``∂_in = ∂_out · [x > 0] · [∂_out > 0]``. The backbones call their ReLU through the
``activation`` field of :class:`~infocam_jax.models.network.Network` (``spec.TrunkOptions``,
default ``nn.relu``); :func:`guided_backprop` runs ``model.clone(activation=guided_relu)``, a
``jax.custom_vjp`` ReLU with the same forward. Why a field and not an interceptor: the ReLUs are
plain functions, not modules, so ``flax.linen.intercept_methods`` cannot see them, and a field
is explicit (no global patching, no jaxpr rewriting), keeps the variables unchanged and works
under ``jit``. A model without that field is refused (ValueError). As pytorch-grad-cam (which
swaps its ``nn.ReLU`` modules), only the backbone's ReLUs are guided; the GAP head is linear.

Both return ``[B, H, W, C]`` at the input, not a ``[B, h, w]`` map: they are registered with
``output="image"`` (:mod:`.registry`), which ``names()`` (``METHOD_NAMES``) and so the
evaluation's map kinds leave out; call them directly or through ``compute``. For a WSOL score
map reduce over colours first (e.g. ``max_c |G|``) and treat the result as an ``[B, H, W]`` map.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from infocam_jax.maps.posthoc import core, gradient, registry
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER


@jax.custom_vjp
def guided_relu(x):
    """``max(x, 0)`` whose vjp is ``g · [x > 0] · [g > 0]`` (guided backpropagation)."""
    return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def guided_model(model):
    """``model`` with its ReLUs replaced by :func:`guided_relu`.

    Raises:
      ValueError: ``model`` has no ``activation`` field.
    """
    core.check_model(model)
    if not hasattr(model, "activation"):
        raise ValueError(f"guided backpropagation needs a model with an `activation` field "
                         f"(infocam_jax.models backbones), got {type(model).__name__}")
    return model.clone(activation=guided_relu)


@registry.register("guided_backprop", "Guided Backprop", family="gradient", output="image",
                   common=("aug_smooth",))
def guided_backprop(model, variables, images, targets=None):
    """Guided backpropagation: ``∂y^c/∂X`` through guided ReLUs (module docstring).

    Args:
      model: a backbone with an ``activation`` field; variables; images float ``[B, H, W, C]``;
      targets: ``None`` (the predicted class), int ``[B]`` in ``[0, M)`` (under ``jit`` an
        out-of-range target gives NaN) or a :class:`~.targets.Score` (:mod:`.targets`).

    Returns:
      float32 ``[B, H, W, C]``, the input's shape (pytorch-grad-cam's
      ``GuidedBackpropReLUModel`` output, HWC, for every image of the batch).
    """
    guided = guided_model(model)
    images, _, targets, num_classes = core.prepare(model, variables, images, targets,
                                                   DEFAULT_LAYER)

    def logits(x):
        return guided.apply(variables, x, train=False)[0].astype(jnp.float32)

    out, pullback = jax.vjp(logits, images.astype(jnp.float32))
    return pullback(core.target_cotangent(targets, out, num_classes))[0].astype(jnp.float32)


@registry.register("guided_gradcam", "Guided Grad-CAM", family="gradient", output="image")
def guided_gradcam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
                   relu: bool = True):
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017, §3.2): guided backpropagation times the
    Grad-CAM map upsampled bilinearly to the input (``jax.image.resize`` "linear", half-pixel
    centres as OpenCV's ``resize``): ``G ⊙ Up(L_Grad-CAM)``, broadcast over colours.

    The raw Grad-CAM map, as the paper (pytorch-grad-cam's example first min-max scales it,
    a per-image affine change).

    Args:
      model, variables, images, targets: as :func:`guided_backprop`.
      layer, relu: Grad-CAM's (:func:`~.gradient.gradcam`).

    Returns:
      float32 ``[B, H, W, C]``.
    """
    guided = guided_backprop(model, variables, images, targets)
    cam = gradient.gradcam(model, variables, images, targets, layer=layer, relu=relu)
    b, height, width, _ = guided.shape
    up = jax.image.resize(cam, (b, height, width), "linear")
    return guided * up[..., None]
