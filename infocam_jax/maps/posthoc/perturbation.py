"""The perturbation maps: channel weights from the scores of perturbed (masked) images.

Score-CAM. Each runs ``chunk_size`` perturbed copies of every image through the model per
forward pass (a ``lax.map`` over chunks), so memory grows with ``B · chunk_size``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc import targets as targets_lib
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER

SCORECAM_EPS = 1e-8


@registry.register("scorecam", "Score-CAM", options=("chunk_size",), family="perturbation",
                   callable_targets=True)
def scorecam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True, chunk_size: int = core.DEFAULT_CHUNK_SIZE):
    """Score-CAM (Wang et al., CVPR-W 2020, eqs. 4-6 with the softmax normalisation of §4).

    Each channel becomes a mask ``H_k = s(Up(A_k))`` (bilinear upsampling to the input size,
    ``align_corners=True``, then min-max normalisation ``s(x) = (x - min)/(max - min + 1e-8)``);
    its score is the target logit of the masked image, ``C_k = y^c(X ∘ H_k)`` (a callable target,
:mod:`.targets`, is applied to the masked image's logits, as the peer does; ``None`` is the class
predicted for the unmasked image); the weights are
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
    images, layer, targets, num_classes = core.prepare(model, variables, images, targets, layer)
    chunk_size = core.check_chunk_size(chunk_size)
    logits, activation = core.forward_at_layer(model, variables, images, layer)
    targets = targets_lib.resolve(targets, logits)
    activation = activation.astype(jnp.float32)
    batch, height, width, channels_in = images.shape
    _, h, w, k = activation.shape
    chunk_size = min(chunk_size, k)
    num_chunks = -(-k // chunk_size)
    up_h = jnp.asarray(core.align_corners_matrix(height, h))
    up_w = jnp.asarray(core.align_corners_matrix(width, w))
    padded = jnp.pad(activation, ((0, 0), (0, 0), (0, 0), (0, num_chunks * chunk_size - k)))
    chunks = jnp.moveaxis(padded.reshape(batch, h, w, num_chunks, chunk_size), 3, 0)

    def chunk_scores(a):  # [B, h, w, c] -> [B, c]
        up = jnp.einsum("Hh,bhwc,Ww->bcHW", up_h, a, up_w, precision=core.HIGHEST)
        lo = jnp.min(up, axis=(2, 3), keepdims=True)
        hi = jnp.max(up, axis=(2, 3), keepdims=True)
        masks = (up - lo) / (hi - lo + SCORECAM_EPS)
        masked = images[:, None].astype(jnp.float32) * masks[..., None]
        logits, _ = model.apply(variables, masked.reshape(-1, height, width, channels_in),
                                train=False)
        logits = logits.astype(jnp.float32).reshape(batch, chunk_size, num_classes)
        return targets_lib.scores(targets, logits)

    scores = lax.map(chunk_scores, chunks)                        # [n, B, c]
    scores = jnp.moveaxis(scores, 0, 1).reshape(batch, -1)[:, :k]
    weights = core.nan_where_invalid(jax.nn.softmax(scores, axis=-1), targets, num_classes)
    return core.weighted_sum(weights, activation, relu)
