"""Box-aware per-example image transforms (NumPy + PIL, host side).

Every geometric op takes and returns ``(image, boxes)``:

* ``image``: uint8 ``[H, W, C]`` (C = 1 or 3);
* ``boxes``: float32 ``[G, 4]`` as ``(x0, y0, x1, y1)``, *inclusive* pixel coordinates of the
  current image (a box covering the whole image is ``(0, 0, W-1, H-1)``).

Boxes stay float through a chain of ops and are rounded once, at the end, by
:func:`clip_boxes`, which also reports which boxes still overlap the image.

Conventions follow the reference WSOL code (Choe et al., CVPR 2020 / Choe & Shim, CVPR 2019):
resizing scales each coordinate by ``new_size / old_size`` (no half-pixel shift), crops subtract
the crop offset, and the final integer box is the truncation of the clipped float box.
Crop offsets are those of torchvision (``RandomCrop``: uniform in ``[0, H-S]``; ``CenterCrop``:
``round((H-S)/2)``), resizing is PIL bilinear (antialiased when shrinking), like
``torchvision.transforms.Resize`` on PIL images.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# (x/255 - mean)/std == x * _SCALE - _SHIFT: one cast and two in-place passes.
_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_SHIFT = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)

EVAL_PROTOCOLS = ("center_crop", "resize")


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        if len(size) != 2:
            raise ValueError(f"size must be an int or (height, width); got {size!r}")
        h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive; got {size!r}")
    return h, w


def _check(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"image must be uint8 [H, W, C] with C in (1, 3); got {image.dtype} {image.shape}")
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [G, 4] (x0, y0, x1, y1); got shape {boxes.shape}")
    return image, boxes


def resize(image: np.ndarray, boxes: np.ndarray, size: int | Sequence[int]):
    """Resizes to ``size`` (int S -> S x S, or (H', W')) and scales the boxes alike.

    Args:
      image: uint8 [H, W, C].
      boxes: float32 [G, 4] inclusive (x0, y0, x1, y1).
      size: output size.

    Returns:
      (uint8 [H', W', C], float32 [G, 4]) with x scaled by W'/W and y by H'/H.

    Plain scaling (the reference WSOL code) maps the inclusive corner ``x1`` to ``x1 * s`` while
    the object's last resized pixel is near ``(x1 + 1) * s - 1``: they differ by ``s - 1`` px,
    within one pixel for every scale up to 2 (all CUB / Tiny-ImageNet settings).
    """
    image, boxes = _check(image, boxes)
    h, w = image.shape[:2]
    nh, nw = _size_hw(size)
    if (nh, nw) != (h, w):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out = np.asarray(pil.resize((nw, nh), Image.BILINEAR))
        image = out.reshape(nh, nw, image.shape[-1])
    scale = np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    return image, boxes * scale


def crop(image: np.ndarray, boxes: np.ndarray, top: int, left: int, size: int | Sequence[int]):
    """Crops the window ``[top, top+h) x [left, left+w)``; boxes shift by the offset (not clipped).

    Raises:
      ValueError: when the window does not fit inside the image.
    """
    image, boxes = _check(image, boxes)
    h, w = image.shape[:2]
    ch, cw = _size_hw(size)
    if top < 0 or left < 0 or top + ch > h or left + cw > w:
        raise ValueError(
            f"crop window (top={top}, left={left}, size={ch}x{cw}) does not fit an image of "
            f"{h}x{w}")
    offset = np.array([left, top, left, top], np.float32)
    return image[top:top + ch, left:left + cw], boxes - offset


def random_crop(image: np.ndarray, boxes: np.ndarray, size: int | Sequence[int],
                rng: np.random.Generator):
    """Crops a uniformly placed ``size`` window (offsets in ``[0, H-h]``, ``[0, W-w]``)."""
    image, boxes = _check(image, boxes)
    h, w = image.shape[:2]
    ch, cw = _size_hw(size)
    if ch > h or cw > w:
        raise ValueError(f"random_crop size {ch}x{cw} exceeds the image size {h}x{w}")
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    return crop(image, boxes, top, left, (ch, cw))


def center_crop(image: np.ndarray, boxes: np.ndarray, size: int | Sequence[int]):
    """Crops the central ``size`` window (offset ``round((H-h)/2)``, as torchvision)."""
    image, boxes = _check(image, boxes)
    h, w = image.shape[:2]
    ch, cw = _size_hw(size)
    if ch > h or cw > w:
        raise ValueError(f"center_crop size {ch}x{cw} exceeds the image size {h}x{w}")
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return crop(image, boxes, top, left, (ch, cw))


def horizontal_flip(image: np.ndarray, boxes: np.ndarray):
    """Mirrors left-right: for inclusive coordinates ``x0' = W-1-x1``, ``x1' = W-1-x0``."""
    image, boxes = _check(image, boxes)
    w = image.shape[1]
    flipped = np.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], -1)
    return image[:, ::-1], flipped.astype(np.float32)


def clip_boxes(boxes: np.ndarray, height: int, width: int):
    """Clips float boxes to the image and truncates them to int32.

    Args:
      boxes: float [G, 4] inclusive (x0, y0, x1, y1).
      height, width: image size.

    Returns:
      (int32 [G, 4] boxes inside ``[0, W-1] x [0, H-1]``, bool [G] True where the box overlaps
      the image at all; a box cropped away entirely is False).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    inside = ((boxes[:, 2] >= 0) & (boxes[:, 3] >= 0)
              & (boxes[:, 0] <= width - 1) & (boxes[:, 1] <= height - 1)
              & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1]))
    hi = np.array([width - 1, height - 1, width - 1, height - 1], np.float32)
    clipped = np.clip(boxes, 0.0, hi)
    return np.trunc(clipped).astype(np.int32), inside


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 [..., C] -> float32 [..., C]: RGB gets ImageNet mean/std, one channel gets x/255."""
    image = np.asarray(image)
    x = image.astype(np.float32)
    if image.shape[-1] == 3:
        x *= _SCALE
        x -= _SHIFT
        return x
    if image.shape[-1] == 1:
        x *= np.float32(1.0 / 255.0)
        return x
    raise ValueError(f"image must have 1 or 3 channels; got shape {image.shape}")


def preprocess(image: np.ndarray, boxes: np.ndarray, *, training: bool,
               image_size: Sequence[int], resize_size: int = 0,
               eval_protocol: str = "center_crop", flip: bool = True,
               rng: np.random.Generator | None = None):
    """The full per-example geometry of the train / eval pipelines.

    * ``resize_size > 0``: train = resize to ``resize_size`` -> random crop ``image_size`` ->
      random horizontal flip (p = 0.5, when ``flip``); eval ``"center_crop"`` = resize to
      ``resize_size`` -> centre crop ``image_size`` (the infoCAM authors' protocol); eval
      ``"resize"`` = plain resize to ``image_size`` (the reference WSOL protocol).
    * ``resize_size == 0`` (Tiny-ImageNet at 64x64, digit canvases): no resize or crop (an image
      whose size differs from ``image_size`` is resized to it); train still flips when ``flip``.

    Args:
      image: uint8 [H, W, C].
      boxes: float32 [G, 4] inclusive (x0, y0, x1, y1) in the coordinates of ``image``.
      training: augment (needs ``rng``) or not.
      image_size: output (height, width).
      resize_size: the pre-crop square size, 0 for none.
      eval_protocol: "center_crop" or "resize".
      flip: allow the random horizontal flip when training (False for digits).
      rng: numpy Generator for the random crop / flip.

    Returns:
      (uint8 [h, w, C], int32 [G, 4] boxes clipped to the output, bool [G] box still visible).
    """
    out_hw = _size_hw(tuple(image_size))
    if eval_protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"eval_protocol must be one of {EVAL_PROTOCOLS}; got {eval_protocol!r}")
    if resize_size < 0:
        raise ValueError(f"resize_size must be >= 0; got {resize_size}")
    if training and rng is None:
        raise ValueError("preprocess(training=True) needs an rng")
    if resize_size > 0 and (training or eval_protocol == "center_crop"):
        if resize_size < max(out_hw):
            raise ValueError(f"resize_size={resize_size} is smaller than image_size={out_hw}")
        image, boxes = resize(image, boxes, resize_size)
        if training:
            image, boxes = random_crop(image, boxes, out_hw, rng)
        else:
            image, boxes = center_crop(image, boxes, out_hw)
    else:
        image, boxes = resize(image, boxes, out_hw)
    if training and flip and rng.random() < 0.5:
        image, boxes = horizontal_flip(image, boxes)
    int_boxes, visible = clip_boxes(boxes, *out_hw)
    return np.ascontiguousarray(image), int_boxes, visible
