"""The perturbation maps: channel weights from the scores of perturbed images or activations.

Score-CAM, SS-CAM, IS-CAM (masked images) and Ablation-CAM (ablated channels). Each runs
``chunk_size`` perturbed copies of every image through the model per forward pass (a ``lax.map``
over chunks of channels, zero-padded to a whole number of chunks), so memory grows with
``B · chunk_size`` and the map does not depend on ``chunk_size``. As pytorch-grad-cam and
torch-cam, the score of an image is the target's logit.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc import targets as targets_lib
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER

SCORECAM_EPS = 1e-8
# torch-cam's normalisation of the activations before upsampling (SS-CAM, IS-CAM).
TORCHCAM_EPS = 1e-8
# pytorch-grad-cam's AblationLayer: an ablated channel is set to min(A) - 1e7 (0 when min(A) = 0).
ABLATION_VALUE = 1e7
SSCAM_SAMPLES, SSCAM_STD, ISCAM_SAMPLES = 35, 2.0, 10


def _read_layer(model, variables, images, targets, layer, chunk_size):
    """The shared start of every perturbation map: checked arguments and one clean forward
    pass. Returns ``(images, layer, targets, M, chunk_size, logits [B, M], A [B, h, w, K])``
    with ``None`` targets resolved to the predicted class and ``A`` in float32."""
    images, layer, targets, num_classes = core.prepare(model, variables, images, targets, layer)
    chunk_size = core.check_chunk_size(chunk_size)
    logits, activation = core.forward_at_layer(model, variables, images, layer)
    targets = targets_lib.resolve(targets, logits)
    return (images, layer, targets, num_classes, chunk_size, logits,
            activation.astype(jnp.float32))


def _per_channel_scores(score_chunk, activation, chunk_size):
    """``[B, K]``: ``score_chunk(a [B, h, w, c], channels [c]) -> [B, c]`` over chunks of ``c``
    channels (the last chunk zero-padded, channels ``>= K``; their scores are dropped)."""
    batch, h, w, k = activation.shape
    chunk_size = min(chunk_size, k)
    num_chunks = -(-k // chunk_size)
    padded = jnp.pad(activation, ((0, 0), (0, 0), (0, 0), (0, num_chunks * chunk_size - k)))
    chunks = jnp.moveaxis(padded.reshape(batch, h, w, num_chunks, chunk_size), 3, 0)
    channels = jnp.arange(num_chunks * chunk_size).reshape(num_chunks, chunk_size)
    scores = lax.map(lambda args: score_chunk(*args), (chunks, channels))   # [n, B, c]
    return jnp.moveaxis(scores, 0, 1).reshape(batch, -1)[:, :k]


def _target_logits(model, variables, images, targets, batch):
    """Target scores of ``images [B·c, H, W, C]`` (image-major copies) -> ``[B, c]``."""
    logits, _ = model.apply(variables, images, train=False)
    return _pick(logits, targets, batch)


def _pick(logits, targets, batch):
    """``logits [B·c, M]`` (image-major) -> the targets' scores ``[B, c]``
    (:func:`.targets.scores`: the target logit, or a :class:`~.targets.Score` of the logits)."""
    logits = logits.astype(jnp.float32).reshape(batch, -1, logits.shape[-1])
    return targets_lib.scores(targets, logits)


def _masked_images(images, masks):
    """``images [B, H, W, C]`` times ``masks [B, H, W, c]`` -> ``[B·c, H, W, C]`` (image-major)."""
    masked = images[:, None].astype(jnp.float32) * jnp.moveaxis(masks, -1, 1)[..., None]
    return masked.reshape((-1,) + images.shape[1:])


def _softmax_map(scores, activation, targets, num_classes, relu, eigen_smooth=False):
    weights = core.nan_where_invalid(jax.nn.softmax(scores, axis=-1), targets, num_classes)
    return core.weighted_sum(weights, activation, relu, eigen_smooth)


@registry.register("scorecam", "Score-CAM", options=("chunk_size", "eigen_smooth"),
                   family="perturbation", callable_targets=True)
def scorecam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True, chunk_size: int = core.DEFAULT_CHUNK_SIZE,
             eigen_smooth: bool = False):
    """Score-CAM (Wang et al., CVPR-W 2020, eqs. 4-6 with the softmax normalisation of §4).

    Each channel becomes a mask ``H_k = s(Up(A_k))`` (bilinear upsampling to the input size,
    ``align_corners=True``, then min-max normalisation ``s(x) = (x - min)/(max - min + 1e-8)``);
    its score is the target logit of the masked image, ``C_k = y^c(X ∘ H_k)`` (a callable target,
    :mod:`.targets`, is applied to the masked image's logits, as the peer does; ``None`` is the
    class predicted for the unmasked image); the weights are
    ``α = softmax_k(C)`` (the paper's ``C_k = f(X ∘ H_k) - f(X_b)`` gives the same weights: a
    per-image constant cancels in the softmax), and ``L = ReLU(Σ_k α_k A_k)``. As
    pytorch-grad-cam, the score is the logit.

    An all-zero activation gives all-zero masks, equal scores, uniform weights and the zero map
    (no NaN: the ``1e-8`` keeps the division finite). No gradient; no closed-form relation to
    CAM.

    Args:
      model, variables, images, targets, layer, relu: as :func:`gradcam`.
      chunk_size: static int >= 1, channels per forward pass (default 32).
      eigen_smooth: the first principal component of ``α_k A_k`` instead of their sum
        (``core.weighted_sum``; pytorch-grad-cam's ``eigen_smooth``).

    Returns:
      float32 ``[B, h, w]``.
    """
    eigen_smooth = core.check_flag(eigen_smooth, "eigen_smooth")
    images, layer, targets, num_classes, chunk_size, logits, activation = _read_layer(
        model, variables, images, targets, layer, chunk_size)
    batch, height, width, _ = images.shape
    _, h, w, _ = activation.shape
    up_h = jnp.asarray(core.align_corners_matrix(height, h))
    up_w = jnp.asarray(core.align_corners_matrix(width, w))

    def chunk_scores(a, channels):  # [B, h, w, c] -> [B, c]
        del channels
        up = jnp.einsum("Hh,bhwc,Ww->bHWc", up_h, a, up_w, precision=core.HIGHEST)
        lo = jnp.min(up, axis=(1, 2), keepdims=True)
        hi = jnp.max(up, axis=(1, 2), keepdims=True)
        masks = (up - lo) / (hi - lo + SCORECAM_EPS)
        return _target_logits(model, variables, _masked_images(images, masks), targets, batch)

    scores = _per_channel_scores(chunk_scores, activation, chunk_size)
    return _softmax_map(scores, activation, targets, num_classes, relu, eigen_smooth)


def check_num_samples(num_samples) -> int:
    if isinstance(num_samples, (bool, np.bool_)) or not isinstance(num_samples,
                                                                   (int, np.integer)):
        raise ValueError(f"num_samples must be a Python int >= 1 (static), got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    return int(num_samples)


def check_std(std) -> float:
    if isinstance(std, (bool, np.bool_)) or not isinstance(std, (int, float, np.number)) \
            or not np.isfinite(std) or std < 0:
        raise ValueError(f"std must be a finite float >= 0, got {std!r}")
    return float(std)


def as_key(key):
    """``key``: an int seed (hashable, so ``registry.jitted`` can take it) or a typed PRNG key
    (``jax.random.key``) -> a typed key."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) \
            and key.shape == ():
        return key
    raise ValueError(f"key must be an int seed or a scalar typed PRNG key "
                     f"(jax.random.key(seed)), got {key!r}")


def sscam_noise(key, sample, channels, shape, std):
    """SS-CAM's noise ``δ ~ N(0, std²)`` of one sample for ``channels [c]``: ``[*shape, c]``.

    Channel ``k`` of sample ``i`` draws from ``fold_in(fold_in(key, i), k)``, so the map does
    not depend on ``chunk_size`` (and a test can rebuild the noise channel by channel).
    """
    sample_key = jax.random.fold_in(key, sample)
    keys = jax.vmap(lambda k: jax.random.fold_in(sample_key, k))(channels)
    noise = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)
    return std * jnp.moveaxis(noise, 0, -1)


def torchcam_masks(activation, height, width):
    """torch-cam's masks ``U(s(A)) [B, H, W, K]``: per-channel min-max normalisation at the
    layer's resolution ``s(a) = (a - min)/(max - min + 1e-8)``, then bilinear upsampling with
    half-pixel centres (torch ``interpolate(..., align_corners=False)``; ``jax.image.resize``
    "linear" equals it when upsampling)."""
    lo = jnp.min(activation, axis=(1, 2), keepdims=True)
    shifted = activation - lo
    normed = shifted / (jnp.max(shifted, axis=(1, 2), keepdims=True) + TORCHCAM_EPS)
    b, _, _, k = activation.shape
    return jax.image.resize(normed, (b, height, width, k), "linear")


def _sampled_score_map(sample_masks, model, variables, images, targets, layer, relu,
                       chunk_size, num_samples):
    """``softmax_k((1/N) Σ_i y^c(X ∘ M_ik) - y^c(X))`` weights on ``A``; ``sample_masks(i,
    U(s(A)) chunk [B, H, W, c], channels [c]) -> M_i [B, H, W, c]``."""
    images, layer, targets, num_classes, chunk_size, logits, activation = _read_layer(
        model, variables, images, targets, layer, chunk_size)
    batch, height, width, _ = images.shape
    baseline = _pick(logits, targets, batch)                                  # [B, 1]

    def chunk_scores(a, channels):
        up = torchcam_masks(a, height, width)

        def one_sample(i):
            masked = _masked_images(images, sample_masks(i, up, channels))
            return _target_logits(model, variables, masked, targets, batch) - baseline

        return jnp.mean(lax.map(one_sample, jnp.arange(num_samples)), axis=0)

    # the normalisation is per channel, so chunking the normalised masks is chunking A
    scores = _per_channel_scores(chunk_scores, activation, chunk_size)
    return _softmax_map(scores, activation, targets, num_classes, relu)


@registry.register("sscam", "SS-CAM", options=("chunk_size", "num_samples", "std", "key"),
                   family="perturbation")
def sscam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER, relu: bool = True,
          chunk_size: int = core.DEFAULT_CHUNK_SIZE, num_samples: int = SSCAM_SAMPLES,
          std: float = SSCAM_STD, key=0):
    """SS-CAM, smoothed Score-CAM (Wang et al., 2020, arXiv:2006.14255, eq. 4), as torch-cam.

    ``w^c = softmax_k((1/N) Σ_i [y^c((U(s(A_k)) + δ_ik) ∘ X) - y^c(X)])`` with
    ``δ_ik ~ N(0, std²)`` drawn per sample, channel and pixel (shared by the colour channels),
    ``s`` the per-channel min-max normalisation and ``U`` the half-pixel bilinear upsampling of
    :func:`torchcam_masks`; ``L = ReLU(Σ_k w_k A_k)``. (The baseline ``y^c(X)`` cancels in the
    softmax.) torch-cam adds the noise to the normalised, upsampled activation, which is what
    this computes; the paper's formula adds it to the input mask too.

    Args:
      model, variables, images, targets, layer, relu, chunk_size: as :func:`scorecam`.
      num_samples: static int >= 1, noisy samples N (torch-cam default 35).
      std: float >= 0, the noise's standard deviation (torch-cam default 2.0).
      key: int seed or typed PRNG key; the noise is :func:`sscam_noise` (deterministic).

    Returns:
      float32 ``[B, h, w]``. Cost: ``N · K`` forward passes per image.
    """
    num_samples, std, key = check_num_samples(num_samples), check_std(std), as_key(key)

    def noisy(i, up, channels):
        return up + sscam_noise(key, i, channels, up.shape[:3], std)

    return _sampled_score_map(noisy, model, variables, images, targets, layer, relu,
                              chunk_size, num_samples)


@registry.register("iscam", "IS-CAM", options=("chunk_size", "num_samples"),
                   family="perturbation")
def iscam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER, relu: bool = True,
          chunk_size: int = core.DEFAULT_CHUNK_SIZE, num_samples: int = ISCAM_SAMPLES):
    """IS-CAM, integrated Score-CAM (Naidu et al., 2020, arXiv:2010.03023, eq. 4), as torch-cam.

    ``w^c = softmax_k((1/N) Σ_{i=1..N} [y^c(c_i · U(s(A_k)) ∘ X) - y^c(X)])`` with masks as
    :func:`sscam` (no noise) and ``c_i = Σ_{j=1..i} j/N = i(i+1)/(2N)``: torch-cam's code (its
    docstring writes ``Σ_{j=0..i-1}``, i.e. ``i(i-1)/(2N)``; we follow the code, the reference
    we test against). ``L = ReLU(Σ_k w_k A_k)``. Deterministic.

    Args:
      model, variables, images, targets, layer, relu, chunk_size: as :func:`scorecam`.
      num_samples: static int >= 1, N (torch-cam default 10).

    Returns:
      float32 ``[B, h, w]``. Cost: ``N · K`` forward passes per image.
    """
    num_samples = check_num_samples(num_samples)

    def scaled(i, up, channels):
        del channels
        return up * ((i + 1) * (i + 2) / (2.0 * num_samples))

    return _sampled_score_map(scaled, model, variables, images, targets, layer, relu,
                              chunk_size, num_samples)


def ablation_values(activation):
    """pytorch-grad-cam's ablation value per image ``[B]``: 0 when ``min(A_b) = 0`` (a layer
    after a ReLU), else ``min(A_b) - 1e7``."""
    lo = jnp.min(activation, axis=(1, 2, 3))
    return jnp.where(lo == 0, 0.0, lo - ABLATION_VALUE)


@registry.register("ablationcam", "Ablation-CAM", options=("chunk_size", "eigen_smooth"),
                   family="perturbation")
def ablationcam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
                relu: bool = True, chunk_size: int = core.DEFAULT_CHUNK_SIZE,
                eigen_smooth: bool = False):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020, eq. 3), as pytorch-grad-cam 1.5.7.

    Channel ``k`` of the layer is ablated, i.e. set to the constant ``v`` of
    :func:`ablation_values` at every position, and the network after the layer runs on it:
    ``y_k = y^c(A with A_k := v)``; ``w_k = (y - y_k) / y`` with ``y = y^c(A)``;
    ``L = ReLU(Σ_k w_k A_k)``. (At ``layer="features"`` the head's input ``GAP(A)_k`` becomes
    ``v``.) pytorch-grad-cam's ``AblationLayer`` re-reads ``min`` after each ablation in a
    chunk, so a chunk's i-th copy gets ``min - (i+1)·1e7``; we use ``min - 1e7`` for every
    copy: the same score whenever a ReLU follows the layer (any value below ``-max`` gives 0),
    and a map that does not depend on ``chunk_size``. ``y = 0`` gives infinite weights, as the
    paper's formula.

    Args:
      model, variables, images, targets, layer, relu: as :func:`gradcam`.
      chunk_size: static int >= 1, ablated channels per image per forward pass (default 32).
      eigen_smooth: as :func:`scorecam`.

    Returns:
      float32 ``[B, h, w]``. Cost: ``K`` forward passes per image.
    """
    eigen_smooth = core.check_flag(eigen_smooth, "eigen_smooth")
    images, layer, targets, num_classes, chunk_size, logits, activation = _read_layer(
        model, variables, images, targets, layer, chunk_size)
    batch = images.shape[0]
    y = _pick(logits, targets, batch)                                         # [B, 1]
    values = ablation_values(activation)
    k = activation.shape[-1]

    def chunk_scores(a, channels):
        c = channels.shape[0]
        ablate = jnp.tile(jax.nn.one_hot(channels, k, dtype=bool), (images.shape[0], 1))
        fill = jnp.repeat(values, c)                                          # [B·c]

        def edit(out):  # [B·c, h, w, K], or the head's input [B·c, K]
            shape = (-1,) + (1,) * (out.ndim - 2)
            return jnp.where(ablate.reshape(shape + (k,)),
                             fill.reshape(shape + (1,)).astype(out.dtype), out)

        del a
        ablated, _ = core.forward_at_layer(model, variables, jnp.repeat(images, c, axis=0),
                                           layer, edit=edit)
        return _pick(ablated, targets, batch)

    scores = _per_channel_scores(chunk_scores, activation, chunk_size)
    weights = core.nan_where_invalid((y - scores) / y, targets, num_classes)
    return core.weighted_sum(weights, activation, relu, eigen_smooth)
