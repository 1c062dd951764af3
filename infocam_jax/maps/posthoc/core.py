"""The shared core of the post-hoc maps: reading, perturbing and differentiating one layer.

Every map of :mod:`infocam_jax.maps.posthoc` is built from these pieces. A model is a Flax module
whose ``apply(variables, images, train=False)`` returns ``(logits [B, M], features [B, h, w, K])``.
The layer is a module path (``"features"``, ``"layer3_5"``, ``"conv5_3"``, ...; see the package
docstring); its activations ``A [B, h, w, K]`` are read and perturbed through
``flax.linen.intercept_methods``, and ``G = ∂y^c/∂A`` comes from one ``jax.vjp``: no hooks.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax.maps.posthoc import layer_names
from infocam_jax.maps.posthoc import targets as targets_lib

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


def check_key(key):
    """An int seed or a JAX PRNG key (typed, or raw ``uint32 [2]``) -> a typed key."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return key
    elif isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise ValueError(f"key must be an int seed or one JAX PRNG key (jax.random.key(seed)), got "
                     f"{key!r}")


def nan_where_invalid(values, targets, num_classes):
    """``values [B, ...]`` with the rows of out-of-range int targets set to NaN (the
    traced-target guard; ``None`` and :class:`~.targets.Score` targets are always valid).

    (``jnp.where``, not a product with NaN: XLA folds ``one_hot * x`` into a select and would
    drop the NaN.)
    """
    valid = targets_lib.valid(targets, num_classes)
    if valid is None:
        return values
    return jnp.where(valid.reshape((-1,) + (1,) * (values.ndim - 1)), values, jnp.nan)


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


def _edit_tokens(out, edit, module):
    """``edit`` applied to a block's patch tokens on their grid ``[B, h, w, D]``, the prefix
    (class / distillation) tokens kept."""
    prefix = module.num_prefix_tokens
    grid = edit(token_grid(module, out))
    return out.at[:, prefix:].set(grid.reshape(out.shape[0], -1, out.shape[-1]).astype(out.dtype))


def forward_at_layer(model, variables, images, layer, delta=None, record_paths=None,
                     edit=None):
    """``model.apply`` in evaluation mode that reads (and perturbs) the output of ``layer``.

    Returns ``(logits, activation)``; with ``delta`` the layer's output is replaced by
    ``output + delta`` (``layer="features"``: the head's input ``pooled + delta``); with
    ``edit`` (a function of an array) by ``edit(output)`` (``"features"``: ``edit(pooled)``;
    a transformer block: ``edit`` of its patch tokens on the grid). A
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
            if edit is not None:
                args = (edit(args[0]),) + tuple(args[1:])
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
            if edit is not None:
                out = edit(out) if grid is None else _edit_tokens(out, edit, context.module)
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
    """Checks a map's arguments; returns ``(images, layer, targets, M)`` with ``layer`` our module
    path (a torch spelling translated, :mod:`.layer_names`) and ``targets`` None, a
    :class:`~.targets.Score` or int32 ``[B]`` (:func:`.targets.check`)."""
    check_model(model)
    images = check_images(images)
    layer = layer_names.resolve(check_layer(layer),
                                lambda: layer_paths(model, variables, images))
    if layer == DEFAULT_LAYER and not getattr(model, "logits_from_gap", True):
        raise ValueError(f"layer {DEFAULT_LAYER!r} needs logits = GAP(features) @ head (e.g. "
                         "DeiT's head='tokens_gap'); this model's head reads other inputs "
                         "(DeiT's head='cls'): name a block, e.g. layer='blocks_11'")
    logits_shape, _, _ = layer_shapes(model, variables, images, layer)
    batch, num_classes = logits_shape.shape
    targets = targets_lib.check(targets, batch, num_classes)
    return images, layer, targets, num_classes


def num_classes_of(model, variables, images):
    """``(B, M)`` of the model's logits for ``images`` (an abstract trace)."""
    check_model(model)
    images = check_images(images)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False)[0], variables, images)
    return logits.shape


def activations_and_gradients(model, variables, images, targets=None,
                              layer: str = DEFAULT_LAYER):
    """The layer's activations and the gradient of each image's target score with respect to them.

    One forward pass and one vjp (through the part of the network after ``layer`` only):
    ``G[b] = ∂ y[b] / ∂ A[b]`` with ``y[b] = logits[b, targets[b]]`` (or a
    :class:`~.targets.Score` of the logits; images are independent in evaluation mode, so the
    vjp of ``Σ_b y[b]`` gives every image's gradient at once).

    Args:
      model: Flax module, ``apply(variables, images, train=False) -> (logits, features)``.
      variables: its variables.
      images: float ``[B, H, W, C]``.
      targets: ``None`` (the predicted class), int ``[B]`` in ``[0, M)`` (checked when
        concrete; under ``jit`` an out-of-range target gives NaN gradients, hence NaN maps) or
        a :class:`~.targets.Score` (:mod:`.targets`).
      layer: module path (module docstring), static.

    Returns:
      ``(logits [B, M], A [B, h, w, K], G [B, h, w, K])``, float32.

    Raises:
      ValueError: ``images`` not rank 4, unknown ``layer``, bad ``targets``.
    """
    images, layer, targets, num_classes = prepare(model, variables, images, targets, layer)
    return layer_gradients(model, variables, images, targets, layer, num_classes)


def layer_gradients(model, variables, images, targets, layer, num_classes, objective=None):
    """``(logits, A, G)`` of checked inputs (:func:`activations_and_gradients`).

    ``objective(logits [B, M]) -> [B]`` replaces the target logit as the differentiated score
    (FinerCAM's weighted logit differences); ``G[b] = ∂ objective(logits)[b] / ∂ A[b]``.
    """
    _, _, delta_shape = layer_shapes(model, variables, images, layer)
    delta = jnp.zeros(delta_shape.shape, delta_shape.dtype)

    def f(d):
        logits, activation = forward_at_layer(model, variables, images, layer, delta=d)
        logits = logits.astype(jnp.float32)
        if objective is None:
            score = targets_lib.scores(targets_lib.resolve(targets, logits), logits)
        else:
            score = objective(logits)
        return score, (logits, activation)

    score, pullback, (logits, activation) = jax.vjp(f, delta, has_aux=True)
    (grad,) = pullback(jnp.ones_like(score))
    grad = nan_where_invalid(grad.astype(jnp.float32), targets, num_classes)
    activation = activation.astype(jnp.float32)
    if layer == DEFAULT_LAYER:  # vjp of the mean: d pooled / d features = 1 / (h w)
        grad = spread_pooled(grad, activation.shape)
    return logits, activation, grad


def spread_pooled(pooled, shape):
    """``[B, K]`` (a vector at the GAP output) -> ``[B, h, w, K]`` through the transpose of the
    mean over positions: every position gets ``pooled / (h w)``."""
    _, h, w, _ = shape
    return jnp.broadcast_to(pooled[:, None, None, :] / (h * w), shape)


def weighted_sum(weights, activations, relu: bool, eigen_smooth: bool = False):
    """``ReLU(Σ_k W_k ⊙ A_k)``: ``W`` broadcastable to ``A [B,h,w,K]`` -> ``[B,h,w]``.

    ``eigen_smooth``: instead of the channel sum, the projection of the weighted activations
    ``W ⊙ A`` on their first principal component (:func:`first_component_projection`;
    pytorch-grad-cam's ``eigen_smooth=True``, up to its arbitrary sign).
    """
    if eigen_smooth:
        weights = weights.reshape(weights.shape[:1] + (1,) * (activations.ndim - weights.ndim)
                                  + weights.shape[1:])
        maps = first_component_projection(weights * activations)
    elif weights.ndim == 2:
        maps = jnp.einsum("bhwk,bk->bhw", activations, weights, precision=HIGHEST)
    else:
        maps = jnp.sum(jnp.broadcast_to(weights, activations.shape) * activations, axis=-1)
    return jnp.maximum(maps, 0.0) if relu else maps


def gradient_map(rule, model, variables, images, targets, layer, relu, eigen_smooth=False,
                 objective=None):
    """``ReLU(Σ_k W_k ⊙ A_k)`` with ``W = rule(A, G)`` (``[B, K]`` or ``[B, h, w, K]``), ``G``
    the gradient of the target logit (or of ``objective``, :func:`layer_gradients`) at
    ``layer``; ``eigen_smooth`` as :func:`weighted_sum`. Returns float32 ``[B, h, w]``."""
    images, layer, targets, num_classes = prepare(model, variables, images, targets, layer)
    if objective is not None:
        objective = functools.partial(_resolved_objective, objective, targets)
    _, a, g = layer_gradients(model, variables, images, targets, layer, num_classes, objective)
    return weighted_sum(rule(a, g), a, relu, check_flag(eigen_smooth, "eigen_smooth"))


def _resolved_objective(objective, targets, logits):
    """``objective(logits, targets=int [B])`` with ``None`` targets read as the predicted class."""
    return objective(logits, targets=targets_lib.resolve(targets, logits))


def target_cotangent(targets, logits, num_classes):
    """``∂ Σ_b y[b] / ∂ logits`` float32 ``[B, M]``: the one-hot of each image's target class
    (``None``: the predicted class), or the gradient of a :class:`~.targets.Score`; rows of
    out-of-range int targets are NaN. The cotangent of a vjp whose primal output is the logits."""
    resolved = targets_lib.resolve(targets, jax.lax.stop_gradient(logits))
    cotangent = jax.grad(lambda z: jnp.sum(targets_lib.scores(resolved, z)))(
        jax.lax.stop_gradient(logits).astype(jnp.float32))
    return nan_where_invalid(cotangent, targets, num_classes)


def check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)


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


