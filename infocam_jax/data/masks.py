"""The protocol's pixel ground truth of mask datasets (OpenImages30k in the reference WSOL
evaluation, clovaai/wsolevaluation): instance masks resized like ``cv2.resize(INTER_NEAREST)``,
foreground where > 0.5, united; ignored pixels are the ignore mask minus the foreground.

Read by :class:`infocam_jax.data.wsol_metadata.WsolMetadataSource` (training records with
``mask`` / ``ignore``) and by the score-map tool (:mod:`infocam_jax.evaluation.scoremaps`).
"""
from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

__all__ = ["RESIZE_LENGTH", "load_mask"]

# The reference evaluation's map and mask resolution.
RESIZE_LENGTH = 224


def _read_gray(path: str) -> np.ndarray:
    """uint8 gray image as ``cv2.imread(path, IMREAD_GRAYSCALE)`` decodes it.

    Colour PNGs go through libpng's conversion, as OpenCV's PNG decoder asks for it:
    ``(9797 R + 19234 G + 3737 B) >> 15`` (truncated; pixels with R = G = B kept); other
    formats through PIL's ``convert("L")`` (libjpeg's rounding).
    """
    if not os.path.isfile(path):
        raise ValueError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "1"):
                return np.asarray(im.convert("L"), np.uint8)
            if im.mode.startswith("I;16") or im.mode == "I":
                return (np.asarray(im, np.uint32) >> 8).astype(np.uint8)
            if im.format != "PNG":
                return np.asarray(im.convert("L"), np.uint8)
            rgb = np.asarray(im.convert("RGB"), np.uint32)
    except Exception as e:  # PIL raises several types for a corrupt file
        raise ValueError(f"mask {path} could not be read as an image: {e}") from None
    gray = (rgb[..., 0] * 9797 + rgb[..., 1] * 19234 + rgb[..., 2] * 3737) >> 15
    equal = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    return np.where(equal, rgb[..., 0], gray).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # cv2.resize INTER_NEAREST: source index floor(x * (n_in / n_out)), clipped.
    return np.minimum(np.floor(np.arange(n_out) * (1.0 / (n_out / n_in))).astype(np.int64),
                      n_in - 1)


def _mask_at(path: str, size: int) -> np.ndarray:
    gray = _read_gray(path)
    h, w = gray.shape[:2]
    return gray[_nearest_index(h, size)][:, _nearest_index(w, size)] > 0


def load_mask(mask_root: str, mask_paths, ignore_path: str, size: int = RESIZE_LENGTH):
    """The protocol's GT of one image: (foreground bool ``[size, size]``, ignore bool).

    Foreground is the union of the instance masks (each resized nearest-neighbour, > 0.5);
    ignore is the ignore mask minus the foreground ("" = no ignore mask).

    Raises:
      ValueError naming a mask file that is missing or cannot be decoded.
    """
    foreground = np.zeros((size, size), bool)
    for p in mask_paths:
        foreground |= _mask_at(os.path.join(mask_root, p), size)
    ignore = np.zeros((size, size), bool)
    if ignore_path:
        ignore = _mask_at(os.path.join(mask_root, ignore_path), size) & ~foreground
    return foreground, ignore
