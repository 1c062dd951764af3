r"""The training-only WSOL methods as jittable batch transforms: Hide-and-Seek and CutMix.

They change no model: ``config.method = "has"`` or ``"cutmix"`` makes the train step transform
each device's batch before the forward pass (``train_methods.py`` wires them). Each transform is
split in two, so that a test can feed the draws another implementation made:

* ``*_draw(key, ...)``: every random quantity, from a JAX PRNG key;
* ``*_apply(images, draw, ...)``: the deterministic transform given the draw.

Images are NHWC float32 ``[B, H, W, C]`` (already normalised, as the reference applies both
methods to the normalised tensor: a hidden patch is 0, i.e. the dataset mean colour).

Hide-and-Seek (Singh & Lee, ICCV 2017; reference ``wsol/method/has.py``)
-----------------------------------------------------------------------
The image is cut into square cells of ``g = grid_size`` pixels (the last row / column of cells
is cut short by the border); cell ``(i, j)`` covers rows ``[i g, min((i+1) g, H))`` and columns
``[j g, min((j+1) g, W))``, and each cell of each image is hidden independently when its
uniform draw ``u_{b,i,j} in [0, 1)`` satisfies ``u <= drop_rate``:

    x'_{b,y,x,c} = 0  if  u_{b, y // g, x // g} <= drop_rate,   else  x_{b,y,x,c}.      (HaS)

``grid_size = 0`` returns the batch unchanged. On square inputs (the reference's 224 x 224) this
is the reference's transform: it visits cells with the row index outer and the column index
inner, one ``random.random()`` each, which is the row-major order of ``u[b]``
(tests/test_augment.py checks it against fixtures produced by running the reference).

Non-square inputs: the reference's loops iterate the row offset over ``range(0, W, g)`` and
the column offset over ``range(0, H, g)`` and clip both ends at ``H``, so with ``H != W`` it only
ever hides cells inside rows ``[0, min(H, ceil(W/g) g))`` and columns ``[0, min(H, W))`` and
draws a ``ceil(W/g) x ceil(H/g)`` grid. Our transform instead covers the whole ``H x W`` image
with a ``ceil(H/g) x ceil(W/g)`` grid (what Hide-and-Seek describes); the two agree whenever
``H == W``.

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
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CutMixDraw", "cutmix", "cutmix_apply", "cutmix_draw", "cutmix_loss",
           "check_cutmix_options", "check_has_options", "has_apply", "has_draw",
           "has_grid_shape", "hide_and_seek", "permute_targets"]

TARGET_KEYS = ("label", "labels")


# ----------------------------------------------------------------------------- checks

def check_has_options(grid_size, drop_rate, where: str = "") -> None:
    """ValueError naming the field unless ``grid_size`` is an int >= 0 and ``drop_rate`` in [0, 1]."""
    if isinstance(grid_size, bool) or int(grid_size) != grid_size or grid_size < 0:
        raise ValueError(f"{where}has_grid_size must be an int >= 0 (pixels per cell; 0 = off), "
                         f"got {grid_size!r}")
    if not 0.0 <= float(drop_rate) <= 1.0:
        raise ValueError(f"{where}has_drop_rate must be in [0, 1], got {drop_rate!r}")


def check_cutmix_options(beta, prob, where: str = "") -> None:
    """ValueError naming the field unless ``beta > 0`` and ``prob`` in [0, 1]."""
    if not float(beta) > 0.0 or not np.isfinite(float(beta)):
        raise ValueError(f"{where}cutmix_beta must be a finite number > 0, got {beta!r}")
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"{where}cutmix_prob must be in [0, 1], got {prob!r}")


def _check_images(images) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C] (rank 4), got shape {images.shape}")


# ----------------------------------------------------------------------------- Hide-and-Seek

def has_grid_shape(height: int, width: int, grid_size: int) -> tuple[int, int]:
    """(rows, cols) of HaS cells: ``(ceil(H / g), ceil(W / g))``; (0, 0) when ``g = 0``."""
    if grid_size == 0:
        return 0, 0
    return -(-int(height) // int(grid_size)), -(-int(width) // int(grid_size))


def has_draw(key: jax.Array, batch_size: int, height: int, width: int, grid_size: int,
             drop_rate: float, offset=0) -> jax.Array:
    """Which HaS cells to hide: bool ``[B, ceil(H/g), ceil(W/g)]`` (``u <= drop_rate``).

    Example ``i`` of the batch draws from ``fold_in(key, offset + i)``, so a global batch split
    over devices (``offset`` = the device's first global index) hides the same cells as on one
    device.

    Args:
      key: PRNG key.
      batch_size, height, width: B, H, W of the images.
      grid_size: g >= 1, cell side in pixels.
      drop_rate: probability of hiding a cell, in [0, 1].
      offset: int or int32 [] global index of example 0.
    """
    check_has_options(grid_size, drop_rate)
    rows, cols = has_grid_shape(height, width, grid_size)
    index = jnp.arange(batch_size) + offset
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (rows, cols)))(index)
    return u <= drop_rate


def has_apply(images: jax.Array, hide: jax.Array, grid_size: int) -> jax.Array:
    """Eq. (HaS): zero every pixel of a hidden cell.

    Args:
      images: float ``[B, H, W, C]``.
      hide: bool ``[B, ceil(H/g), ceil(W/g)]`` (``has_draw``).
      grid_size: g >= 1.

    Returns:
      ``[B, H, W, C]``, same dtype.
    """
    _check_images(images)
    _, h, w, _ = images.shape
    if hide.shape != (images.shape[0], *has_grid_shape(h, w, grid_size)):
        raise ValueError(f"hide must have shape [B, ceil(H/g), ceil(W/g)] = "
                         f"{(images.shape[0], *has_grid_shape(h, w, grid_size))}, got "
                         f"{hide.shape}")
    rows = jnp.arange(h) // grid_size
    cols = jnp.arange(w) // grid_size
    pixel = hide[:, rows[:, None], cols[None, :]]  # [B, H, W]
    return jnp.where(pixel[..., None], jnp.zeros((), images.dtype), images)


def hide_and_seek(key: jax.Array, images: jax.Array, grid_size: int = 4,
                  drop_rate: float = 0.5, offset=0) -> jax.Array:
    """``has_apply(images, has_draw(key, ...))``; the images unchanged when ``grid_size = 0``."""
    check_has_options(grid_size, drop_rate)
    _check_images(images)
    if grid_size == 0:
        return images
    b, h, w, _ = images.shape
    return has_apply(images, has_draw(key, b, h, w, grid_size, drop_rate, offset), grid_size)


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
