"""Reading and checking saved score maps in the layout of the reference WSOL evaluation
(clovaai/wsolevaluation).

Inputs, as the reference reads them:

* ``<metadata_root>/<dataset_name>/<split>/`` holds ``image_ids.txt`` (one id per line),
  ``class_labels.txt`` (``id,label``), ``image_sizes.txt`` (``id,width,height``) and
  ``localization.txt``: ``id,x0,y0,x1,y1`` lines for box datasets (several lines for several
  boxes) or ``id,mask_path,ignore_path`` lines for mask datasets (several lines for several
  instance masks; the ignore path on the image's first line), read by
  :func:`infocam_jax.data.wsol_metadata.read_metadata`. ``OpenImages`` is the mask dataset; any
  other name is read as a box dataset.
* ``<scoremap_root>/<image_id>.npy``: a 2-D float map in [0, 1] per image (``<id>.npy`` with the
  id's extension kept, as the reference's loader builds the name; ``<id without extension>.npy``
  is accepted too). All maps share one shape (224x224 for masks).
* masks under ``<mask_root>/<dataset_name>/<mask_path>``, read by
  :func:`infocam_jax.data.masks.load_mask` (instance masks resized to 224x224 like
  ``cv2.resize(INTER_NEAREST)``, foreground where > 0.5, united; ignored pixels are the ignore
  mask minus the foreground).

GT boxes are rescaled to 224x224 as ``int(float(x) * 224 / width)`` (truncation). The batched
evaluation is :mod:`infocam_jax.evaluation.scoremaps.score`; writing this layout is
:mod:`infocam_jax.evaluation.scoremaps.write`.
"""
from __future__ import annotations

import os

import numpy as np

from infocam_jax.data.masks import RESIZE_LENGTH
from infocam_jax.data.wsol_metadata import Metadata

__all__ = ["MASK_DATASETS", "gt_boxes", "load_scoremap", "resize_boxes", "scoremap_path"]

MASK_DATASETS = ("OpenImages",)


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------
def resize_boxes(boxes, image_size, size: int = RESIZE_LENGTH) -> np.ndarray:
    """Boxes ``[..., 4]`` of an image of ``(width, height)`` rescaled to ``size x size``:
    ``int(float(x) * size / width)`` as the reference computes it. Returns int32."""
    width, height = (float(v) for v in image_size)
    scaled = np.asarray(boxes, np.float64) * float(size) / np.array([width, height, width, height])
    return scaled.astype(np.int64).astype(np.int32)


def gt_boxes(metadata: Metadata, size: int = RESIZE_LENGTH):
    """Padded GT boxes at ``size x size``: (int32 ``[N, G, 4]``, bool valid ``[N, G]``)."""
    ids = metadata.image_ids
    g = max(len(metadata.boxes[i]) for i in ids)
    out = np.zeros((len(ids), g, 4), np.int32)
    valid = np.zeros((len(ids), g), bool)
    for n, image_id in enumerate(ids):
        b = metadata.boxes[image_id]
        out[n, :len(b)] = resize_boxes(b, metadata.image_sizes[image_id], size)
        valid[n, :len(b)] = True
    return out, valid


# --------------------------------------------------------------------------------------------
# Score maps
# --------------------------------------------------------------------------------------------
def scoremap_path(scoremap_root: str, image_id: str) -> str:
    """``<root>/<image_id>.npy``, else ``<root>/<image_id without extension>.npy`` if that
    exists (the layout the reference's README describes)."""
    path = os.path.join(scoremap_root, image_id + ".npy")
    if not os.path.isfile(path):
        alt = os.path.join(scoremap_root, os.path.splitext(image_id)[0] + ".npy")
        if os.path.isfile(alt):
            return alt
    return path


def load_scoremap(path: str, shape: tuple | None = None) -> np.ndarray:
    """Loads and checks one map: 2-D floating point, no NaN, values in [0, 1].

    Args:
      path: the ``.npy`` file.
      shape: the ``(H, W)`` every map must have, or None.

    Raises:
      ValueError naming the file.
    """
    if not os.path.isfile(path):
        raise ValueError(f"score map not found: {path}")
    try:
        m = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for a corrupt file
        raise ValueError(f"score map {path} could not be read as .npy: {e}") from None
    if m.ndim != 2:
        raise ValueError(f"score map {path} must be 2-D (H, W), got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.floating):
        raise ValueError(f"score map {path} must have a floating-point dtype, got {m.dtype}")
    if shape is not None and m.shape != tuple(shape):
        raise ValueError(f"score map {path} has shape {m.shape}, expected {tuple(shape)} "
                         f"like the other maps")
    if np.isnan(m).any():
        raise ValueError(f"score map {path} contains NaN")
    lo, hi = (float(m.min()), float(m.max())) if m.size else (0.0, 0.0)
    if lo < 0 or hi > 1:
        raise ValueError(f"score map {path} must lie in [0, 1], got values in [{lo}, {hi}]")
    return m
