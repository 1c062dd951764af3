"""Post-hoc class activation maps of any backbone: the Grad-CAM family, Score-CAM, Eigen-CAM.

Each method is a pure function ``f(model, variables, images, targets, *, layer=..., ...)`` of a
Flax model whose ``apply(variables, images, train=False)`` returns ``(logits [B, M], features
[B, h, w, K])`` (every ``infocam_jax.models`` backbone with the GAP head, i.e. a method without a head;
ACoL and SPG networks are refused with a ValueError naming the method). It returns float32 maps ``[B, h', w']``
at the chosen layer's resolution, with the same shape contract as :func:`infocam_jax.maps.cams.cam`,
so ``boxes.scoremaps`` and the eval step take them unchanged. Everything traces under ``jit``
(``model`` and the keyword options are static) and works on the whole batch at once.

Notation: ``A [B, h, w, K]`` the activations of the layer, ``G = ∂y^c/∂A`` the gradient of the
target's **logit** ``y^c = logits[b, targets[b]]`` (pre-softmax, as pytorch-grad-cam's
``ClassifierOutputTarget``), ``Σ_ij`` a sum over the ``h x w`` positions, ``Z = h·w``. Each
gradient method is one *weight rule* ``(A, G) -> W`` with ``W`` broadcastable to ``A``
(``[B, 1, 1, K]`` channel weights or ``[B, h, w, K]`` element-wise weights); the shared core
(:func:`activations_and_gradients`, then :func:`_weighted_sum`) forms
``L = ReLU(Σ_k W_k ⊙ A_k)`` (``relu=False`` drops the ReLU; pytorch-grad-cam applies it to every
method). Gradients come from ``jax.vjp`` through the Flax model: no hooks.

The layer (``layer=``) is a path in the module tree:

* ``"features"`` (the default): the map global average pooling consumes, the model's second
  output. Its gradient is the vjp through the head module ``"head"``: the models compute
  ``logits = head(mean(features, (h, w)))``, so ``∂y/∂features[b,i,j,k] = ∂y/∂pooled[b,k] / Z``
  exactly (the vjp of the mean).
* any submodule's output, written as the ``/``-joined names of the module path from the top
  module: ``"conv5_3"``, ``"conv6"`` (VGG16-GAP, before its ReLU), ``"layer4_2"`` (ResNet50's
  last block, equal to ``"features"``), ``"layer3_5"``, ``"layer4_2/bn3"``, ``"adl_3M"``, ... .
  The submodule's ``__call__`` output must be one ``[B, h, w, K]`` array; it is read and
  perturbed through ``flax.linen.intercept_methods``. :func:`layer_paths` lists the valid
  paths of a model.

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
* Score-CAM and Eigen-CAM use no gradient; Eigen-CAM does not depend on the class at all.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax import _checks

__all__ = [
    "DEFAULT_LAYER",
    "METHODS",
    "METHOD_NAMES",
    "activations_and_gradients",
    "compute",
    "eigencam",
    "gradcam",
    "gradcampp",
    "hirescam",
    "layer_paths",
    "layercam",
    "scorecam",
    "xgradcam",
]

DEFAULT_LAYER = "features"
HEAD = "head"
SCORECAM_CHUNK = 32
# pytorch-grad-cam's constants (kept so that the maps agree with it to float rounding).
GRADCAMPP_EPS = 1e-6
XGRADCAM_EPS = 1e-7
SCORECAM_EPS = 1e-8
_HIGHEST = lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
def _check_images(images):
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, H, W, C] (rank 4), got {images.shape}")
    return images


def _check_layer(layer) -> str:
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a non-empty module path string such as "
                         f"'{DEFAULT_LAYER}' or 'layer4_2', got {layer!r}")
    return layer


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size,
                                                                   (int, np.integer)):
        raise ValueError(f"chunk_size must be a Python int >= 1 (static), got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def _valid(targets, num_classes):
    """[B] bool: ``targets`` in ``[0, M)`` (the traced-target guard)."""
    return (targets >= 0) & (targets < num_classes)


def _nan_where_invalid(values, targets, num_classes):
    """``values [B, ...]`` with the rows of out-of-range targets set to NaN.

    (``jnp.where``, not a product with NaN: XLA folds ``one_hot * x`` into a select and would
    drop the NaN.)
    """
    valid = _valid(targets, num_classes).reshape((-1,) + (1,) * (values.ndim - 1))
    return jnp.where(valid, values, jnp.nan)


# --------------------------------------------------------------------------------------------
# Reading and perturbing a layer
# --------------------------------------------------------------------------------------------
def _module_path(context) -> str:
    return "/".join(context.module.path)


def _forward(model, variables, images, layer, delta=None, record_paths=None):
    """``model.apply`` in evaluation mode that reads (and perturbs) the output of ``layer``.

    Returns ``(logits, activation)``; with ``delta`` the layer's output is replaced by
    ``output + delta`` (``layer="features"``: the head's input ``pooled + delta``).
    ``record_paths`` (a list) collects the paths of every submodule whose ``__call__`` returns a
    rank-4 array.
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
        if record_paths is not None and path and getattr(out, "ndim", None) == 4:
            record_paths.append(path)
        if path == target:
            if getattr(out, "ndim", None) != 4:
                raise ValueError(f"layer {layer!r} must output one [B, h, w, K] array, got "
                                 f"{jax.tree_util.tree_map(jnp.shape, out)}")
            seen.append(out)
            if delta is not None:
                out = out + delta.astype(out.dtype)
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


def layer_paths(model, variables, images) -> Tuple[str, ...]:
    """The valid ``layer=`` values of ``model`` for inputs shaped like ``images``.

    Traced abstractly (``jax.eval_shape``): nothing is computed.

    Returns:
      ``("features",) +`` the ``/``-joined paths of every submodule whose ``__call__`` returns
      a rank-4 array, in call order.
    """
    images = _check_images(images)
    paths = []
    jax.eval_shape(lambda v, x: _forward(model, v, x, DEFAULT_LAYER, record_paths=paths)[0],
                   variables, images)
    return (DEFAULT_LAYER,) + tuple(dict.fromkeys(paths))


def _shapes(model, variables, images, layer):
    """(logits, activation, delta) ShapeDtypeStructs, from an abstract trace."""
    def run(v, x):
        logits, activation = _forward(model, v, x, layer)
        if layer == DEFAULT_LAYER:
            pooled = jnp.zeros(activation.shape[:1] + activation.shape[-1:], activation.dtype)
            return logits, activation, pooled
        return logits, activation, activation
    return jax.eval_shape(run, variables, images)


def _check_model(model):
    """Networks with a method head (``models.Network`` with a ``method_head``) return the
    method's output, not ``(logits, features)``, and have no ``head`` module: refused, naming
    the method."""
    head = getattr(model, "method_head", None)
    if head is not None:
        raise ValueError(f"post-hoc maps are not defined for method {head.method!r} (several "
                         "class heads); read its CAM / infoCAM / infoCAM+ instead "
                         "(cams.fused_maps)")


def _prepare(model, variables, images, targets, layer):
    _check_model(model)
    images = _check_images(images)
    layer = _check_layer(layer)
    logits_shape, _, _ = _shapes(model, variables, images, layer)
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
    images, layer, targets, num_classes = _prepare(model, variables, images, targets, layer)
    return _activations_and_gradients(model, variables, images, targets, layer, num_classes)


def _activations_and_gradients(model, variables, images, targets, layer, num_classes):
    _, _, delta_shape = _shapes(model, variables, images, layer)
    delta = jnp.zeros(delta_shape.shape, delta_shape.dtype)

    def f(d):
        logits, activation = _forward(model, variables, images, layer, delta=d)
        return logits.astype(jnp.float32), activation

    logits, pullback, activation = jax.vjp(f, delta, has_aux=True)
    cotangent = _nan_where_invalid(jax.nn.one_hot(targets, num_classes, dtype=jnp.float32),
                                   targets, num_classes)
    (grad,) = pullback(cotangent)
    grad = grad.astype(jnp.float32)
    activation = activation.astype(jnp.float32)
    if layer == DEFAULT_LAYER:  # vjp of the mean: d pooled / d features = 1 / (h w)
        _, h, w, _ = activation.shape
        grad = jnp.broadcast_to(grad[:, None, None, :] / (h * w), activation.shape)
    return logits, activation, grad


def _weighted_sum(weights, activations, relu: bool):
    """``ReLU(Σ_k W_k ⊙ A_k)``: ``W`` broadcastable to ``A [B,h,w,K]`` -> ``[B,h,w]``."""
    if weights.ndim == 2:
        maps = jnp.einsum("bhwk,bk->bhw", activations, weights, precision=_HIGHEST)
    else:
        maps = jnp.sum(jnp.broadcast_to(weights, activations.shape) * activations, axis=-1)
    return jnp.maximum(maps, 0.0) if relu else maps


# --------------------------------------------------------------------------------------------
# Weight rules (A, G) -> W
# --------------------------------------------------------------------------------------------
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


def _gradient_method(rule, model, variables, images, targets, layer, relu):
    images, layer, targets, num_classes = _prepare(model, variables, images, targets, layer)
    _, a, g = _activations_and_gradients(model, variables, images, targets, layer, num_classes)
    return _weighted_sum(rule(a, g), a, relu)


def gradcam(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
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
    return _gradient_method(_gradcam_weights, model, variables, images, targets, layer, relu)


def hirescam(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """HiResCAM (Draelos & Carin, 2020, "Use HiResCAM instead of Grad-CAM", eq. 5).

    ``L^c = ReLU(Σ_k ∂y^c/∂A_k ⊙ A_k)``: the element-wise product instead of Grad-CAM's
    spatially averaged gradient.

    On the GAP features the gradient is ``W[k,y]/Z`` at every position, so HiResCAM equals
    Grad-CAM there: ``ReLU(CAM)/Z``; before the ReLU exactly ``CAM/Z``, and its sum over
    positions is the target logit minus the bias.

    Args and returns as :func:`gradcam`.
    """
    return _gradient_method(_hirescam_weights, model, variables, images, targets, layer, relu)


def gradcampp(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
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
    return _gradient_method(_gradcampp_weights, model, variables, images, targets, layer, relu)


def xgradcam(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """XGrad-CAM (Fu et al., BMVC 2020, eq. 14).

    ``α_k^c = Σ_ij (A_ijk / Σ_ab A_abk) ∂y^c/∂A_ijk``, ``L = ReLU(Σ_k α_k A_k)``
    (``eps = 1e-7`` added to ``Σ_ab A_abk`` as pytorch-grad-cam).

    On the GAP features ``α_k = (W[k,y]/Z) · S_k/(S_k + eps)``: Grad-CAM's weight for every
    channel that is not zero everywhere, so ``xgradcam = ReLU(CAM)/Z`` up to the eps.

    Args and returns as :func:`gradcam`.
    """
    return _gradient_method(_xgradcam_weights, model, variables, images, targets, layer, relu)


def layercam(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """LayerCAM (Jiang et al., IEEE TIP 2021, eqs. 5-6).

    ``L^c = ReLU(Σ_k ReLU(∂y^c/∂A_k) ⊙ A_k)``: element-wise weights, negative gradients
    dropped.

    On the GAP features ``layercam = ReLU(Σ_k [W[k,y]]_+ A_k)/Z`` (the ReLU is then a no-op on
    non-negative features): the CAM of the positive part of the class's weight column.

    Args and returns as :func:`gradcam`.
    """
    return _gradient_method(_layercam_weights, model, variables, images, targets, layer, relu)


# --------------------------------------------------------------------------------------------
# Score-CAM
# --------------------------------------------------------------------------------------------
def _align_corners_matrix(out_size: int, in_size: int) -> np.ndarray:
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


def scorecam(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
             relu: bool = True, chunk_size: int = SCORECAM_CHUNK):
    """Score-CAM (Wang et al., CVPR-W 2020, eqs. 4-6 with the softmax normalisation of §4).

    Each channel becomes a mask ``H_k = s(Up(A_k))`` (bilinear upsampling to the input size,
    ``align_corners=True``, then min-max normalisation ``s(x) = (x - min)/(max - min + 1e-8)``);
    its score is the target logit of the masked image, ``C_k = y^c(X ∘ H_k)``; the weights are
    ``α = softmax_k(C)`` (the paper's ``C_k = f(X ∘ H_k) - f(X_b)`` gives the same weights: a
    per-image constant cancels in the softmax), and ``L = ReLU(Σ_k α_k A_k)``. As
    pytorch-grad-cam, the score is the logit.

    Batched over channels: ``chunk_size`` channels of every image go through the model in one
    forward pass of ``B · chunk_size`` masked images (a ``lax.map`` over ``ceil(K/chunk_size)``
    chunks; memory grows with ``B · chunk_size``). An all-zero activation gives all-zero masks,
    equal scores, uniform weights and the zero map (no NaN: the ``1e-8`` keeps the division
    finite). No gradient; no closed-form relation to CAM.

    Args:
      model, variables, images, targets, layer, relu: as :func:`gradcam`.
      chunk_size: static int >= 1, channels per forward pass (default 32).

    Returns:
      float32 ``[B, h, w]``.
    """
    images, layer, targets, num_classes = _prepare(model, variables, images, targets, layer)
    chunk_size = _check_chunk_size(chunk_size)
    _, activation = _forward(model, variables, images, layer)
    activation = activation.astype(jnp.float32)
    batch, height, width, channels_in = images.shape
    _, h, w, k = activation.shape
    chunk_size = min(chunk_size, k)
    num_chunks = -(-k // chunk_size)
    up_h = jnp.asarray(_align_corners_matrix(height, h))
    up_w = jnp.asarray(_align_corners_matrix(width, w))
    padded = jnp.pad(activation, ((0, 0), (0, 0), (0, 0), (0, num_chunks * chunk_size - k)))
    chunks = jnp.moveaxis(padded.reshape(batch, h, w, num_chunks, chunk_size), 3, 0)
    safe_targets = jnp.clip(targets, 0, num_classes - 1)

    def chunk_scores(a):  # [B, h, w, c] -> [B, c]
        up = jnp.einsum("Hh,bhwc,Ww->bcHW", up_h, a, up_w, precision=_HIGHEST)
        lo = jnp.min(up, axis=(2, 3), keepdims=True)
        hi = jnp.max(up, axis=(2, 3), keepdims=True)
        masks = (up - lo) / (hi - lo + SCORECAM_EPS)
        masked = images[:, None].astype(jnp.float32) * masks[..., None]
        logits, _ = model.apply(variables, masked.reshape(-1, height, width, channels_in),
                                train=False)
        logits = logits.astype(jnp.float32).reshape(batch, chunk_size, num_classes)
        return jnp.take_along_axis(logits, safe_targets[:, None, None], axis=2)[..., 0]

    scores = lax.map(chunk_scores, chunks)                        # [n, B, c]
    scores = jnp.moveaxis(scores, 0, 1).reshape(batch, -1)[:, :k]
    weights = _nan_where_invalid(jax.nn.softmax(scores, axis=-1), targets, num_classes)
    return _weighted_sum(weights, activation, relu)


# --------------------------------------------------------------------------------------------
# Eigen-CAM
# --------------------------------------------------------------------------------------------
def _first_component_projection(activation):
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
        gram = jnp.einsum("bnk,bmk->bnm", x, x, precision=_HIGHEST)
        values, vectors = jnp.linalg.eigh(gram)
        proj = vectors[..., -1] * jnp.sqrt(jnp.maximum(values[..., -1:], 0.0))
    else:
        gram = jnp.einsum("bnk,bnl->bkl", x, x, precision=_HIGHEST)
        _, vectors = jnp.linalg.eigh(gram)
        proj = jnp.einsum("bnk,bk->bn", x, vectors[..., -1], precision=_HIGHEST)
    sign = jnp.where(jnp.sum(proj * jnp.sum(x, axis=-1), axis=-1) < 0, -1.0, 1.0)
    return (proj * sign[:, None]).reshape(b, h, w)


def eigencam(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
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
    images, layer, targets, num_classes = _prepare(model, variables, images, targets, layer)
    _, activation = _forward(model, variables, images, layer)
    maps = _first_component_projection(activation.astype(jnp.float32))
    maps = jnp.maximum(maps, 0.0) if relu else maps
    return _nan_where_invalid(maps, targets, num_classes)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
METHODS: Dict[str, Callable[..., Any]] = {
    "gradcam": gradcam,
    "hirescam": hirescam,
    "gradcampp": gradcampp,
    "xgradcam": xgradcam,
    "layercam": layercam,
    "scorecam": scorecam,
    "eigencam": eigencam,
}
METHOD_NAMES = tuple(METHODS)
DISPLAY_NAMES = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM", "gradcampp": "Grad-CAM++",
                 "xgradcam": "XGrad-CAM", "layercam": "LayerCAM", "scorecam": "Score-CAM",
                 "eigencam": "Eigen-CAM"}
GRADIENT_METHODS = ("gradcam", "hirescam", "gradcampp", "xgradcam", "layercam")


def compute(method: str, model, variables, images, targets, **options):
    """``METHODS[method](model, variables, images, targets, **options)``.

    Args:
      method: one of ``METHOD_NAMES``.
      **options: ``layer``, ``relu`` (all methods), ``chunk_size`` (``"scorecam"`` only).

    Raises:
      ValueError: unknown ``method`` or option (naming it), and the method's own errors.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHOD_NAMES}, got {method!r}")
    allowed = ("layer", "relu") + (("chunk_size",) if method == "scorecam" else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid: "
                         f"{', '.join(allowed)}")
    return METHODS[method](model, variables, images, targets, **options)


@functools.lru_cache(maxsize=None)
def jitted(method: str, model, **options):
    """A cached ``jax.jit`` of ``(variables, images, targets) -> maps`` for one method, model
    and options (hashable; Flax modules are)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHOD_NAMES}, got {method!r}")
    return jax.jit(functools.partial(compute, method, model, **options))
