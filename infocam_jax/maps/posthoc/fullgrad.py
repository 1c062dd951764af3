"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, eq. 6): input-gradient and bias-gradient maps.

Unlike the one-layer maps, FullGrad reads every layer that carries a bias: the gradient of the
target logit with respect to each such layer's output comes from one ``jax.vjp`` through
``flax.linen.intercept_methods`` (a zero perturbation added to every bias layer's output, as
:func:`core.forward_at_layer` does for one layer).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER

# pytorch-grad-cam's scale_cam_image: (x - min) / (max - min + 1e-7) per channel.
SCALE_EPS = 1e-7


def folded_bias(module, out):
    """The bias ``[K]`` that ``module`` adds to its rank-4 output ``out``, or None.

    A convolution (a module owning ``kernel`` and ``bias`` parameters) adds its ``bias``; a
    BatchNorm in evaluation mode computes ``γ (x - μ)/sqrt(σ² + eps) + β``, whose bias is
    ``β - μ γ / sqrt(σ² + eps)`` (the folding of FullGrad's official code and of
    pytorch-grad-cam). The Dense head (rank-2 output) is not a bias layer, as in the peer.
    """
    if getattr(out, "ndim", None) != 4:
        return None
    params = module.variables.get("params", {})
    if isinstance(module, nn.BatchNorm):
        if not module.use_bias:
            return None
        stats = module.variables["batch_stats"]
        scale = params["scale"] if module.use_scale else 1.0
        return params["bias"] - stats["mean"] * scale / jnp.sqrt(stats["var"] + module.epsilon)
    if "bias" in params and "kernel" in params:
        return params["bias"]
    return None


def forward_with_bias_deltas(model, variables, images, deltas=None):
    """``(logits, {path: bias [K]}, {path: output ShapeDtypeStruct})`` with ``deltas[path]`` added to each
    bias layer's output (:func:`folded_bias`)."""
    biases, shapes = {}, {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        bias = folded_bias(context.module, out)
        if bias is None:
            return out
        path = "/".join(context.module.path)
        biases[path] = bias
        shapes[path] = jax.ShapeDtypeStruct(out.shape, out.dtype)
        return out if deltas is None else out + deltas[path].astype(out.dtype)

    with nn.intercept_methods(interceptor):
        logits, _ = model.apply(variables, images, train=False)
    return logits.astype(jnp.float32), biases, shapes


def min_max(x, axes):
    """``(x - min) / (max(x - min) + 1e-7)`` over ``axes`` (pytorch-grad-cam's scaling)."""
    x = x - jnp.min(x, axis=axes, keepdims=True)
    return x / (SCALE_EPS + jnp.max(x, axis=axes, keepdims=True))


def bias_layer_shapes(model, variables, images):
    """``{path: ShapeDtypeStruct}`` of every bias layer's output, from an abstract trace."""
    found = {}

    def run(v, x):
        logits, _, shapes = forward_with_bias_deltas(model, v, x)
        found.update(shapes)
        return logits
    jax.eval_shape(run, variables, images)
    return found


def fullgrad_terms(model, variables, images, targets, num_classes):
    """FullGrad's terms at the input resolution: ``(input term [B, H, W], {path: [B, H, W]})``.

    input term: ``Σ_c s(|x ⊙ ∂y/∂x|_c)``; bias term of a layer: ``up(Σ_k s(|b_k ⊙ ∂y/∂z_k|))``
    with ``z`` the layer's output, ``b`` its (folded) bias, ``s`` the per-channel min-max
    scaling :func:`min_max` and ``up`` bilinear resizing to ``H x W`` (half-pixel centres,
    OpenCV's ``INTER_LINEAR``; it is linear, so it commutes with the channel sum).
    """
    deltas = {p: jnp.zeros(s.shape, s.dtype)
              for p, s in bias_layer_shapes(model, variables, images).items()}

    def f(x, d):
        logits, biases, _ = forward_with_bias_deltas(model, variables, x, d)
        return logits, biases

    logits, pullback, biases = jax.vjp(f, images, deltas, has_aux=True)
    cotangent = core.target_cotangent(targets, logits, num_classes).astype(logits.dtype)
    grad_x, grad_d = pullback(cotangent)
    product = jnp.abs(grad_x.astype(jnp.float32) * images.astype(jnp.float32))
    input_term = jnp.sum(min_max(product, (1, 2)), axis=-1)
    bias_terms = {}
    for path, grad in grad_d.items():
        term = jnp.sum(min_max(jnp.abs(grad.astype(jnp.float32) * biases[path]), (1, 2)), axis=-1)
        bias_terms[path] = jax.image.resize(term, input_term.shape, method="linear")
    return input_term, bias_terms


@registry.register("fullgrad", "FullGrad")
def fullgrad(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """FullGrad (Srinivas & Fleuret, NeurIPS 2019, eq. 6) as pytorch-grad-cam's ``FullGrad``.

    ``L = Σ_c s(|x ⊙ ∇_x y^c|_c) + Σ_layers up(Σ_k s(|b_k ⊙ ∇_z y^c|_k))`` over every layer
    with a bias (convolutions with a bias; BatchNorms with the folded bias
    ``β - μ γ / sqrt(σ² + eps)``, :func:`folded_bias`), ``s`` the per-channel min-max scaling
    and ``up`` the bilinear resize to the input size (:func:`fullgrad_terms`). The map is at the
    *input* resolution ``[B, H, W]`` and non-negative (``relu`` changes nothing). It reads all
    layers: ``layer`` must stay ``"features"``.

    Args:
      model, variables, images, targets: as :func:`~.gradient.gradcam`.
      layer: must be ``"features"`` (the default).
      relu: accepted for the common signature; the map is non-negative.

    Returns:
      float32 ``[B, H, W]``.
    """
    if layer != DEFAULT_LAYER:
        raise ValueError(f"layer must be {DEFAULT_LAYER!r} for FullGrad (it reads every layer "
                         f"with a bias), got {layer!r}")
    images, layer, targets, num_classes = core.prepare(model, variables, images, targets, layer)
    input_term, bias_terms = fullgrad_terms(model, variables, images, targets, num_classes)
    maps = input_term + sum(bias_terms.values())
    return jnp.maximum(maps, 0.0) if relu else maps
