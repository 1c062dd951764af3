r"""Hide-and-Seek (HaS) as a WSOL method: a training-only batch transform on the CAM network.

Images are NHWC float32 ``[B, H, W, C]`` (already normalised, as the reference applies the
method to the normalised tensor). The transform is split in two, so that a test can feed the
draws another implementation made: ``*_draw(key, ...)`` (every random quantity, from a JAX PRNG
key) and ``*_apply(images, draw, ...)`` (the deterministic transform given the draw).

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

Randomness: the train step's key of step ``s`` is ``k_s = fold_in(root, s)``; HaS draws per
example from ``fold_in(fold_in(k_s, AUGMENT_STREAM), global example index)``, so the hidden cells
do not depend on the device count.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from infocam_jax.methods import base

__all__ = ["HasOptions", "check_has_options", "has_apply", "has_draw", "has_grid_shape",
           "hide_and_seek"]


def check_has_options(grid_size, drop_rate, where: str = "") -> None:
    """ValueError naming the field unless ``grid_size`` is an int >= 0 and ``drop_rate`` in [0, 1]."""
    if isinstance(grid_size, bool) or int(grid_size) != grid_size or grid_size < 0:
        raise ValueError(f"{where}has_grid_size must be an int >= 0 (pixels per cell; 0 = off), "
                         f"got {grid_size!r}")
    if not 0.0 <= float(drop_rate) <= 1.0:
        raise ValueError(f"{where}has_drop_rate must be in [0, 1], got {drop_rate!r}")


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


@dataclasses.dataclass(frozen=True)
class HasOptions(base.Options):
    """HaS's options: ``grid_size`` (config ``has_grid_size``, int >= 0 pixels per cell; 0 =
    off) and ``drop_rate`` (config ``has_drop_rate``, in [0, 1])."""
    grid_size: int = dataclasses.field(default=4, metadata={"config": "has_grid_size"})
    drop_rate: float = dataclasses.field(default=0.5, metadata={"config": "has_drop_rate"})

    def __post_init__(self):
        check_has_options(self.grid_size, self.drop_rate)


def has_transform(options: HasOptions, batch, step_key, device_index):
    """The train step's HaS: this device's batch with hidden cells; no mix."""
    images = batch["image"]
    offset = device_index * images.shape[0]
    key = jax.random.fold_in(step_key, base.AUGMENT_STREAM)
    images = hide_and_seek(key, images, int(options.grid_size), float(options.drop_rate), offset)
    return dict(batch, image=images), None


HAS = base.register(base.Method(
    "has", options=HasOptions, transform=has_transform,
    doc="Hide-and-Seek: hides random grid cells of each training image (CAM network)."))
