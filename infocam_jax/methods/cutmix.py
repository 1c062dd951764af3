r"""CutMix as a WSOL method: a training-only batch transform and label-mixed loss on the CAM
network.

Images are NHWC float32 ``[B, H, W, C]`` (already normalised, as the reference applies the
method to the normalised tensor). The transform is split in two, so that a test can feed the
draws another implementation made: ``*_draw(key, ...)`` (every random quantity, from a JAX PRNG
key) and ``*_apply(images, draw, ...)`` (the deterministic transform given the draw).

CutMix (Yun et al., ICCV 2019; reference ``wsol/method/cutmix.py`` and ``main.py``)
-----------------------------------------------------------------------------------
With probability ``prob`` (drawn once per batch: applied when ``v < prob``, ``v ~ U[0, 1)``)
a box of a partner image ``x_{π(b)}`` (``π`` a uniform permutation of the batch) is pasted into
every image. ``λ0 ~ Beta(β, β)``; the box has the reference's conventions (its "w" is the row
axis, size[2] of NCHW, and its "h" the column axis):

    cut_r = floor(H sqrt(1 - λ0)),   cut_c = floor(W sqrt(1 - λ0)),
    r ~ U{0..H-1},  c ~ U{0..W-1},
    r1 = clip(r - cut_r // 2, 0, H),  r2 = clip(r + cut_r // 2, 0, H),     (same for c1, c2)
    x'_b[r1:r2, c1:c2] = x_{π(b)}[r1:r2, c1:c2],
    λ = 1 - (r2 - r1)(c2 - c1) / (H W)        (the clipped box; λ = 1 when not applied)

and the loss is label-mixed, ``L = λ L(logits, y) + (1 - λ) L(logits, y_{π})`` (``cutmix_loss``).

Randomness: the train step's key of step ``s`` is ``k_s = fold_in(root, s)``; with
``a_s = fold_in(k_s, AUGMENT_STREAM)`` CutMix's apply / λ / box come from ``a_s`` (one per global
batch, as the reference's one-GPU batch) and its partner permutation from
``fold_in(fold_in(k_s, PERM_STREAM), device)`` within each device's shard (so with D devices
images are paired inside shards of B/D).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax.methods import base

__all__ = ["CutMixDraw", "CutMixOptions", "cutmix", "cutmix_apply", "cutmix_draw",
           "cutmix_loss", "check_cutmix_options", "permute_targets"]

TARGET_KEYS = ("label", "labels")


def check_cutmix_options(beta, prob, where: str = "") -> None:
    """ValueError naming the field unless ``beta > 0`` and ``prob`` in [0, 1]."""
    if not float(beta) > 0.0 or not np.isfinite(float(beta)):
        raise ValueError(f"{where}cutmix_beta must be a finite number > 0, got {beta!r}")
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"{where}cutmix_prob must be in [0, 1], got {prob!r}")


def _check_images(images) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C] (rank 4), got shape {images.shape}")


# ----------------------------------------------------------------------------- CutMix

class CutMixDraw(NamedTuple):
    """The random quantities of one CutMix batch.

    Attributes:
      apply: bool [] (``v < prob``).
      lam0: float32 [] ``λ0 ~ Beta(β, β)`` (before clipping the box).
      perm: int32 [B] partner of each image.
      row: int32 [] box centre row ``r`` in [0, H) (the reference's ``cx``).
      col: int32 [] box centre column ``c`` in [0, W) (the reference's ``cy``).
    """
    apply: jax.Array
    lam0: jax.Array
    perm: jax.Array
    row: jax.Array
    col: jax.Array


def cutmix_draw(key: jax.Array, batch_size: int, height: int, width: int,
                beta: float = 1.0, prob: float = 1.0, perm_key: jax.Array | None = None
                ) -> CutMixDraw:
    """Draws one CutMix batch (see the module docstring).

    Args:
      key: PRNG key of the batch-level draws (apply, λ0, box centre).
      batch_size, height, width: B, H, W of the images.
      beta: β > 0 of the Beta distribution.
      prob: probability in [0, 1] of mixing this batch.
      perm_key: key of the permutation (default: derived from ``key``). The train step passes
        a per-device key here and a key shared by all devices as ``key``, so that every shard
        of a global batch uses the same λ and box, as the reference's single-GPU batch does.
    """
    check_cutmix_options(beta, prob)
    k_apply, k_lam, k_row, k_col, k_perm = jax.random.split(key, 5)
    if perm_key is not None:
        k_perm = perm_key
    return CutMixDraw(
        apply=jax.random.uniform(k_apply, ()) < prob,
        lam0=jax.random.beta(k_lam, beta, beta).astype(jnp.float32),
        perm=jax.random.permutation(k_perm, batch_size).astype(jnp.int32),
        row=jax.random.randint(k_row, (), 0, height, jnp.int32),
        col=jax.random.randint(k_col, (), 0, width, jnp.int32))


def cutmix_box(lam0, row, col, height: int, width: int) -> tuple[jax.Array, ...]:
    """The clipped box ``(r1, r2, c1, c2)`` int32 [] of the module docstring."""
    cut_rat = jnp.sqrt(1.0 - jnp.asarray(lam0, jnp.float32))
    cut_r = jnp.floor(height * cut_rat).astype(jnp.int32)
    cut_c = jnp.floor(width * cut_rat).astype(jnp.int32)
    r1 = jnp.clip(row - cut_r // 2, 0, height)
    r2 = jnp.clip(row + cut_r // 2, 0, height)
    c1 = jnp.clip(col - cut_c // 2, 0, width)
    c2 = jnp.clip(col + cut_c // 2, 0, width)
    return r1, r2, c1, c2


def cutmix_apply(images: jax.Array, draw: CutMixDraw) -> tuple[jax.Array, jax.Array]:
    """Pastes the partners' box; returns (images ``[B, H, W, C]``, λ float32 [] of the clipped box).

    When ``draw.apply`` is False the images are returned unchanged and λ = 1.
    """
    _check_images(images)
    _, h, w, _ = images.shape
    r1, r2, c1, c2 = cutmix_box(draw.lam0, draw.row, draw.col, h, w)
    rows = jnp.arange(h)
    cols = jnp.arange(w)
    inside = (((rows >= r1) & (rows < r2))[:, None] & ((cols >= c1) & (cols < c2))[None, :])
    inside = inside & draw.apply
    mixed = jnp.where(inside[None, :, :, None], images[draw.perm], images)
    # (HW - area) / HW in integers first: exactly 0 for a full box, 1 for an empty one.
    kept = (h * w - (r2 - r1) * (c2 - c1)).astype(jnp.float32)
    lam = jnp.where(draw.apply, kept / float(h * w), 1.0)
    return mixed, lam


def cutmix(key: jax.Array, images: jax.Array, beta: float = 1.0, prob: float = 1.0,
           perm_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mixed images, partner permutation int32 [B], λ float32 []) of one CutMix batch."""
    _check_images(images)
    b, h, w, _ = images.shape
    draw = cutmix_draw(key, b, h, w, beta, prob, perm_key)
    mixed, lam = cutmix_apply(images, draw)
    return mixed, draw.perm, lam


def permute_targets(batch: Mapping[str, jax.Array], perm: jax.Array) -> dict:
    """The batch with its targets (``label`` [B], ``labels`` [B, M]) taken at ``perm``."""
    return {k: (v[perm] if k in TARGET_KEYS else v) for k, v in batch.items()}


def cutmix_loss(loss_fn: Callable, logits: jax.Array, batch: Mapping[str, jax.Array],
                perm: jax.Array, lam: jax.Array) -> jax.Array:
    """``λ loss_fn(logits, batch) + (1 - λ) loss_fn(logits, batch with targets at perm)``.

    ``loss_fn`` is a batch-mean loss (``train.make_loss_fn``), so with softmax this is the
    reference's ``CE(logits, y_a) λ + CE(logits, y_b) (1 - λ)``.
    """
    return (lam * loss_fn(logits, batch)
            + (1.0 - lam) * loss_fn(logits, permute_targets(batch, perm)))


@dataclasses.dataclass(frozen=True)
class CutMixOptions(base.Options):
    """CutMix's options: ``beta`` (config ``cutmix_beta``, finite > 0) and ``prob`` (config
    ``cutmix_prob``, in [0, 1])."""
    beta: float = dataclasses.field(default=1.0, metadata={"config": "cutmix_beta"})
    prob: float = dataclasses.field(default=1.0, metadata={"config": "cutmix_prob"})

    def __post_init__(self):
        check_cutmix_options(self.beta, self.prob)


def cutmix_transform(options: CutMixOptions, batch, step_key, device_index):
    """The train step's CutMix: (mixed batch, (perm int32 [b], λ float32 []))."""
    key = jax.random.fold_in(step_key, base.AUGMENT_STREAM)
    perm_key = jax.random.fold_in(jax.random.fold_in(step_key, base.PERM_STREAM), device_index)
    images, perm, lam = cutmix(key, batch["image"], float(options.beta), float(options.prob),
                               perm_key)
    return dict(batch, image=images), (perm, lam)


def cutmix_method_loss(options, outputs, batch, mix, loss_fn, classification_loss):  # pylint: disable=unused-argument
    """:func:`cutmix_loss` of the main logits with the transform's (perm, λ)."""
    perm, lam = mix
    return cutmix_loss(loss_fn, base.main_logits(outputs), batch, perm, lam)


CUTMIX = base.register(base.Method(
    "cutmix", options=CutMixOptions, transform=cutmix_transform, loss=cutmix_method_loss,
    doc="CutMix: pastes a partner's box into each image and mixes the labels (CAM network)."))
