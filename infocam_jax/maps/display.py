"""Maps for people to look at: pytorch-grad-cam's scaling and overlay, jitted and batched.

* :func:`scale_maps` is the reading the peer's ``cam(input_tensor, targets)`` returns: its
  ReLU, then ``scale_cam_image`` (per-map min-max ``(m - min) / (max - min + 1e-7)`` and a
  bilinear resize to the image: half-pixel centres, edges clamped, no antialiasing, as
  ``cv2.resize``'s ``INTER_LINEAR``), then ``scale_cam_image`` once more at the image's size
  (``aggregate_multi_layers``: the resize does not reach the map's extremes, so the second
  min-max stretches it back to ``[0, 1]``).
* :func:`overlay` is the peer's ``show_cam_on_image(image, map, use_rgb=True)``: the map
  quantised to uint8, coloured with OpenCV's JET colormap, mixed with the image and rescaled so
  its brightest value is 255.

How they relate to :func:`infocam_jax.boxes.scoremaps` (the WSOL evaluation protocol's
normalisation, the one to score boxes with): min-max is invariant under the affine first
scaling and the resize is linear, so ``scale_maps(m, size)`` equals
``boxes.scoremaps(ReLU(m), size, method="bilinear")`` up to the two ``1e-7`` and float
rounding. The protocol's default is bicubic and has no ReLU: use ``scoremaps`` for numbers,
``scale_maps`` for pictures that match the peer's.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import _checks

SCALE_EPS = 1e-7


def _jet_table() -> np.ndarray:
    """``[256, 3]`` uint8 RGB: OpenCV's ``COLORMAP_JET`` as three clipped tents of slope 4
    (blue rises from 128 at level 0; red is blue reversed; green peaks in the middle). Equal
    to ``cv2.applyColorMap`` on 767 of its 768 entries: OpenCV's own float table rounds blue
    at level 159 to 1 where the tent gives 2 (tested)."""
    level = np.arange(256)[:, None]
    rise = np.array([-382, -128, 128])
    fall = np.array([1148, 892, 638])
    return np.clip(np.minimum(4 * level + rise, fall - 4 * level), 0, 255).astype(np.uint8)


JET = _jet_table()


def scale_maps(maps, size):
    """pytorch-grad-cam's reading, batched: ``scale_cam_image(scale_cam_image(np.maximum(maps,
    0), (W, H)))``, what its ``cam(input_tensor, targets)`` returns for one target layer.

    Args:
      maps: float ``[..., h, w]`` (e.g. ``[B, h, w]`` from ``posthoc.compute``, or
        ``[B, T, h, w]`` multi-label maps).
      size: ``(H, W)`` of the image (note: the peer's ``target_size`` is ``(W, H)``).

    Returns:
      float32 ``[..., H, W]`` in ``[0, 1)``; a constant map gives zeros.

    Raises:
      ValueError: ``maps`` of rank < 2, or ``size`` not two ints >= 1.
    """
    maps = jnp.asarray(maps, jnp.float32)
    if maps.ndim < 2:
        raise ValueError(f"maps must have shape [..., h, w] (rank >= 2), got {maps.shape}")
    size = tuple(int(s) for s in np.ravel(size))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with H, W >= 1, got {size}")
    return _scale(maps, size)


def _min_max(maps):
    maps = maps - jnp.min(maps, axis=(-2, -1), keepdims=True)
    return maps / (SCALE_EPS + jnp.max(maps, axis=(-2, -1), keepdims=True))


@functools.partial(jax.jit, static_argnames=("size",))
def _scale(maps, size):
    maps = _min_max(jnp.maximum(maps, 0.0))
    return _min_max(jax.image.resize(maps, maps.shape[:-2] + size, "linear", antialias=False))


def overlay(images, maps, image_weight: float = 0.5):
    """pytorch-grad-cam's ``show_cam_on_image(image, map, use_rgb=True,
    image_weight=image_weight)``, batched.

    ``heat = JET[uint8(255 m)] / 255``; ``o = (1 - w) heat + w image``;
    ``uint8(255 o / max(o))`` (the maximum per image, truncation as NumPy's cast).

    Args:
      images: float ``[B, H, W, C]`` RGB in ``[0, 1]``, ``C`` 3 (or 1, broadcast).
      maps: float ``[B, H, W]`` in ``[0, 1]`` at the image's size (:func:`scale_maps`).
      image_weight: weight ``w`` of the image in ``[0, 1]`` (the peer's name and default).

    Returns:
      uint8 ``[B, H, W, 3]`` RGB.

    Raises:
      ValueError: shapes that do not match, concrete ``images`` or ``maps`` outside ``[0, 1]``,
        or ``image_weight`` outside ``[0, 1]``, each naming the argument.
    """
    images = jnp.asarray(images, jnp.float32)
    maps = jnp.asarray(maps, jnp.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape [B, H, W, 3] (or C = 1), got {images.shape}")
    if maps.shape != images.shape[:3]:
        raise ValueError(f"maps must have shape [B, H, W] = {images.shape[:3]} (the images'; "
                         f"see display.scale_maps), got {maps.shape}")
    if not 0.0 <= float(image_weight) <= 1.0:
        raise ValueError(f"image_weight must lie in [0, 1], got {image_weight}")
    _checks.check_unit_interval(images, "images")
    _checks.check_unit_interval(maps, "maps")
    return _overlay(images, maps, jnp.float32(image_weight))


@jax.jit
def _overlay(images, maps, image_weight):
    levels = (maps * jnp.float32(255)).astype(jnp.int32)
    heat = jnp.asarray(JET)[jnp.clip(levels, 0, 255)].astype(jnp.float32) / jnp.float32(255)
    mixed = (1 - image_weight) * heat + image_weight * images
    mixed = mixed / jnp.max(mixed, axis=(1, 2, 3), keepdims=True)
    return (mixed * jnp.float32(255)).astype(jnp.uint8)
