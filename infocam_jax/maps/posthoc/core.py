"""The shared core of the post-hoc maps: reading, perturbing and differentiating one layer.

Every map of :mod:`infocam_jax.maps.posthoc` is built from these pieces. A model is a Flax module
whose ``apply(variables, images, train=False)`` returns ``(logits [B, M], features [B, h, w, K])``.
The layer is a module path (``"features"``, ``"layer3_5"``, ``"conv5_3"``, ...; see the package
docstring); its activations ``A [B, h, w, K]`` are read and perturbed through
``flax.linen.intercept_methods``, and ``G = ∂y^c/∂A`` comes from one ``jax.vjp``: no hooks.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax import _checks

DEFAULT_LAYER = "features"
HEAD = "head"
# Perturbed copies of each image per forward pass of the perturbation maps.
DEFAULT_CHUNK_SIZE = 32
HIGHEST = lax.Precision.HIGHEST


def check_images(images):
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, H, W, C] (rank 4), got {images.shape}")
    return images


def check_layer(layer) -> str:
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a non-empty module path string such as "
                         f"'{DEFAULT_LAYER}' or 'layer4_2', got {layer!r}")
    return layer


def check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size,
                                                                   (int, np.integer)):
        raise ValueError(f"chunk_size must be a Python int >= 1 (static), got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def valid_targets(targets, num_classes):
    """[B] bool: ``targets`` in ``[0, M)`` (the traced-target guard)."""
    return (targets >= 0) & (targets < num_classes)


def nan_where_invalid(values, targets, num_classes):
    """``values [B, ...]`` with the rows of out-of-range targets set to NaN.

    (``jnp.where``, not a product with NaN: XLA folds ``one_hot * x`` into a select and would
    drop the NaN.)
    """
    valid = valid_targets(targets, num_classes).reshape((-1,) + (1,) * (values.ndim - 1))
    return jnp.where(valid, values, jnp.nan)


def _module_path(context) -> str:
    return "/".join(context.module.path)


def token_grid(module, out):
    """A transformer block's tokens ``[B, N, D]`` on its patch grid ``[B, h, w, D]``, or None.

    A module with ``token_grid`` (h, w) and ``num_prefix_tokens`` (``models.deit.Block``) maps
    tokens ``[:, num_prefix_tokens:]`` row-major onto the grid, dropping the class (and
    distillation) tokens, as pytorch-grad-cam's ``vit_reshape_transform`` does; other modules
    and outputs give None.
    """
    grid = getattr(module, "token_grid", None)
    if grid is None or getattr(out, "ndim", None) != 3:
        return None
    return out[:, module.num_prefix_tokens:].reshape(out.shape[0], *grid, out.shape[-1])


def forward_at_layer(model, variables, images, layer, delta=None, record_paths=None):
    """``model.apply`` in evaluation mode that reads (and perturbs) the output of ``layer``.

    Returns ``(logits, activation)``; with ``delta`` the layer's output is replaced by
    ``output + delta`` (``layer="features"``: the head's input ``pooled + delta``). A
    transformer block's tokens are read on the patch grid (:func:`token_grid`) and ``delta``
    is added to its patch tokens. ``record_paths`` (a list) collects the paths of every
    submodule whose ``__call__`` returns a rank-4 array (or a block's tokens).
    """
    target = HEAD if layer == DEFAULT_LAYER else layer
    seen = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = _module_path(context)
        if path == target and layer == DEFAULT_LAYER:
            seen.append(args[0])
            if delta is not None:
                args = (args[0] + delta.astype(args[0].dtype),) + tuple(args[1:])
            return next_fun(*args, **kwargs)
        out = next_fun(*args, **kwargs)
        grid = token_grid(context.module, out)
        value = out if grid is None else grid
        if record_paths is not None and path and getattr(value, "ndim", None) == 4:
            record_paths.append(path)
        if path == target:
            if getattr(value, "ndim", None) != 4:
                raise ValueError(f"layer {layer!r} must output one [B, h, w, K] array, got "
                                 f"{jax.tree_util.tree_map(jnp.shape, out)}")
            seen.append(value)
            if delta is not None and grid is None:
                out = out + delta.astype(out.dtype)
            elif delta is not None:
                prefix = context.module.num_prefix_tokens
                out = out.at[:, prefix:].add(
                    delta.reshape(out.shape[0], -1, out.shape[-1]).astype(out.dtype))
        return out

    with nn.intercept_methods(interceptor):
        logits, features = model.apply(variables, images, train=False)
    if record_paths is not None:
        return logits, None
    if not seen:
        raise ValueError(f"layer {layer!r} is not a module path of this model; valid layers: "
                         f"{', '.join(layer_paths(model, variables, images))}")
    if len(seen) > 1:
        raise ValueError(f"layer {layer!r} is called {len(seen)} times in one forward pass; "
                         "name a module that is called once")
    activation = features if layer == DEFAULT_LAYER else seen[0]
    return logits, activation


def layer_paths(model, variables, images) -> tuple[str, ...]:
    """The valid ``layer=`` values of ``model`` for inputs shaped like ``images``.

    Traced abstractly (``jax.eval_shape``): nothing is computed.

    Returns:
      ``("features",) +`` the ``/``-joined paths of every submodule whose ``__call__`` returns
      a rank-4 array or a transformer block's tokens (:func:`token_grid`), in call order.
    """
    images = check_images(images)
    paths = []
    jax.eval_shape(lambda v, x: forward_at_layer(model, v, x, DEFAULT_LAYER, record_paths=paths)[0],
                   variables, images)
    return (DEFAULT_LAYER,) + tuple(dict.fromkeys(paths))


def layer_shapes(model, variables, images, layer):
    """(logits, activation, delta) ShapeDtypeStructs, from an abstract trace."""
    def run(v, x):
        logits, activation = forward_at_layer(model, v, x, layer)
        if layer == DEFAULT_LAYER:
            pooled = jnp.zeros(activation.shape[:1] + activation.shape[-1:], activation.dtype)
            return logits, activation, pooled
        return logits, activation, activation
    return jax.eval_shape(run, variables, images)


def check_model(model):
    """Networks with a method head (``models.Network`` with a ``method_head``) return the
    method's output, not ``(logits, features)``, and have no ``head`` module: refused, naming
    the method."""
    head = getattr(model, "method_head", None)
    if head is not None:
        raise ValueError(f"post-hoc maps are not defined for method {head.method!r} (several "
                         "class heads); read its CAM / infoCAM / infoCAM+ instead "
                         "(cams.fused_maps)")


def prepare(model, variables, images, targets, layer):
    check_model(model)
    images = check_images(images)
    layer = check_layer(layer)
    if layer == DEFAULT_LAYER and not getattr(model, "logits_from_gap", True):
        raise ValueError(f"layer {DEFAULT_LAYER!r} needs logits = GAP(features) @ head (e.g. "
                         "DeiT's head='tokens_gap'); this model's head reads other inputs "
                         "(DeiT's head='cls'): name a block, e.g. layer='blocks_11'")
    logits_shape, _, _ = layer_shapes(model, variables, images, layer)
    batch, num_classes = logits_shape.shape
    targets = _checks.check_labels(targets, batch, num_classes, name="targets",
                                   classes_from="the model's number of classes M")
    return images, layer, targets, num_classes


def activations_and_gradients(model, variables, images, targets, layer: str = DEFAULT_LAYER):
    """The layer's activations and the gradient of each image's target logit with respect to them.

    One forward pass and one vjp (through the part of the network after ``layer`` only):
    ``G[b] = ∂ logits[b, targets[b]] / ∂ A[b]`` (images are independent in evaluation mode, so
    the vjp of ``Σ_b logits[b, targets[b]]`` gives every image's gradient at once).

    Args:
      model: Flax module, ``apply(variables, images, train=False) -> (logits, features)``.
      variables: its variables.
      images: float ``[B, H, W, C]``.
      targets: int ``[B]`` in ``[0, M)`` (checked when concrete; under ``jit`` an out-of-range
        target gives NaN gradients, hence NaN maps).
      layer: module path (module docstring), static.

    Returns:
      ``(logits [B, M], A [B, h, w, K], G [B, h, w, K])``, float32.

    Raises:
      ValueError: ``images`` not rank 4, unknown ``layer``, bad ``targets``.
    """
    images, layer, targets, num_classes = prepare(model, variables, images, targets, layer)
    return layer_gradients(model, variables, images, targets, layer, num_classes)


def layer_gradients(model, variables, images, targets, layer, num_classes):
    _, _, delta_shape = layer_shapes(model, variables, images, layer)
    delta = jnp.zeros(delta_shape.shape, delta_shape.dtype)

    def f(d):
        logits, activation = forward_at_layer(model, variables, images, layer, delta=d)
        return logits.astype(jnp.float32), activation

    logits, pullback, activation = jax.vjp(f, delta, has_aux=True)
    cotangent = nan_where_invalid(jax.nn.one_hot(targets, num_classes, dtype=jnp.float32),
                                   targets, num_classes)
    (grad,) = pullback(cotangent)
    grad = grad.astype(jnp.float32)
    activation = activation.astype(jnp.float32)
    if layer == DEFAULT_LAYER:  # vjp of the mean: d pooled / d features = 1 / (h w)
        _, h, w, _ = activation.shape
        grad = jnp.broadcast_to(grad[:, None, None, :] / (h * w), activation.shape)
    return logits, activation, grad


def weighted_sum(weights, activations, relu: bool):
    """``ReLU(Σ_k W_k ⊙ A_k)``: ``W`` broadcastable to ``A [B,h,w,K]`` -> ``[B,h,w]``."""
    if weights.ndim == 2:
        maps = jnp.einsum("bhwk,bk->bhw", activations, weights, precision=HIGHEST)
    else:
        maps = jnp.sum(jnp.broadcast_to(weights, activations.shape) * activations, axis=-1)
    return jnp.maximum(maps, 0.0) if relu else maps


def gradient_map(rule, model, variables, images, targets, layer, relu):
    images, layer, targets, num_classes = prepare(model, variables, images, targets, layer)
    _, a, g = layer_gradients(model, variables, images, targets, layer, num_classes)
    return weighted_sum(rule(a, g), a, relu)


def align_corners_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Bilinear interpolation matrix ``[out, in]`` with ``align_corners=True`` (torch's
    ``UpsamplingBilinear2d``): output pixel ``i`` samples input position ``i (in-1)/(out-1)``."""
    m = np.zeros((out_size, in_size), np.float32)
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    src = np.arange(out_size) * scale
    lo = np.clip(np.floor(src).astype(int), 0, in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo).astype(np.float32)
    m[np.arange(out_size), lo] += 1.0 - frac
    m[np.arange(out_size), hi] += frac
    return m


def first_component_projection(activation):
    """``X v_1`` for ``X = A - mean_ij(A)`` ``[B, n, K]`` and its first right singular vector.

    Computed from the smaller Gram matrix with ``eigh``: for ``n <= K``,
    ``X X^T = U Σ² U^T`` and ``X v_1 = σ_1 u_1``; otherwise ``X^T X = V Σ² V^T``. The sign of
    a singular vector is arbitrary; it is fixed so that the projection correlates positively
    with the (centred) channel sum ``X 1`` (ties: +).
    """
    b, h, w, k = activation.shape
    n = h * w
    x = activation.reshape(b, n, k)
    x = x - jnp.mean(x, axis=1, keepdims=True)
    if n <= k:
        gram = jnp.einsum("bnk,bmk->bnm", x, x, precision=HIGHEST)
        values, vectors = jnp.linalg.eigh(gram)
        proj = vectors[..., -1] * jnp.sqrt(jnp.maximum(values[..., -1:], 0.0))
    else:
        gram = jnp.einsum("bnk,bnl->bkl", x, x, precision=HIGHEST)
        _, vectors = jnp.linalg.eigh(gram)
        proj = jnp.einsum("bnk,bk->bn", x, vectors[..., -1], precision=HIGHEST)
    sign = jnp.where(jnp.sum(proj * jnp.sum(x, axis=-1), axis=-1) < 0, -1.0, 1.0)
    return (proj * sign[:, None]).reshape(b, h, w)


