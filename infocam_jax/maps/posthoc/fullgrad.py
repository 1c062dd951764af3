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


def fullgrad_terms(model, variables, images, targets, num_classes,
                   keep_input_channels: bool = False):
    """FullGrad's terms at the input resolution: ``(input term [B, H, W], {path: [B, H, W]})``
    (``keep_input_channels``: the input term per channel, ``[B, H, W, C]``, unsummed).

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
    input_term = min_max(product, (1, 2))                                    # [B, H, W, C]
    if not keep_input_channels:
        input_term = jnp.sum(input_term, axis=-1)
    bias_terms = {}
    for path, grad in grad_d.items():
        term = jnp.sum(min_max(jnp.abs(grad.astype(jnp.float32) * biases[path]), (1, 2)), axis=-1)
        bias_terms[path] = jax.image.resize(term, images.shape[:3], method="linear")
    return input_term, bias_terms


def eigen_smooth_terms(input_channels, bias_terms):
    """pytorch-grad-cam's ``FullGrad`` with ``eigen_smooth``: every term a channel (the input's
    ``C`` channels and one per bias layer), each min-max scaled and resized to ``H/8 x W/8``
    (bilinear, half-pixel centres, no antialiasing: OpenCV's ``INTER_LINEAR``), their first
    principal component (``core.first_component_projection``, sign fixed by the channel sum),
    min-max scaled, resized back to ``H x W``. Returns float32 ``[B, H, W]`` in [0, 1]."""
    b, h, w, _ = input_channels.shape
    stacked = jnp.concatenate([input_channels] + [t[..., None] for t in bias_terms.values()],
                              axis=-1)
    small = jax.image.resize(min_max(stacked, (1, 2)), (b, h // 8, w // 8, stacked.shape[-1]),
                             method="linear", antialias=False)
    projection = core.first_component_projection(small)
    return jax.image.resize(min_max(projection, (1, 2)), (b, h, w), method="linear")


@registry.register("fullgrad", "FullGrad", options=("eigen_smooth",))
def fullgrad(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True, eigen_smooth: bool = False):
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
      eigen_smooth: the first principal component of the terms instead of their sum, read as
        pytorch-grad-cam does (:func:`eigen_smooth_terms`: at ``H/8 x W/8``, already min-max
        scaled).

    Returns:
      float32 ``[B, H, W]``.
    """
    eigen_smooth = core.check_flag(eigen_smooth, "eigen_smooth")
    if layer != DEFAULT_LAYER:
        raise ValueError(f"layer must be {DEFAULT_LAYER!r} for FullGrad (it reads every layer "
                         f"with a bias), got {layer!r}")
    images = core.check_images(images)
    if eigen_smooth and min(images.shape[1:3]) < 8:
        raise ValueError(f"eigen_smooth of FullGrad resizes its terms to H/8 x W/8: images must "
                         f"be at least 8 x 8, got {images.shape[1]} x {images.shape[2]}")
    images, layer, targets, num_classes = core.prepare(model, variables, images, targets, layer)
    input_term, bias_terms = fullgrad_terms(model, variables, images, targets, num_classes,
                                            keep_input_channels=eigen_smooth)
    if eigen_smooth:
        return eigen_smooth_terms(input_term, bias_terms)
    maps = input_term + sum(bias_terms.values())
    return jnp.maximum(maps, 0.0) if relu else maps
