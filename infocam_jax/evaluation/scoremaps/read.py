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

Before any map is evaluated, :func:`check_scoremap_files` reads the ``.npy`` header (not the
data) of every listed map: a missing, truncated or corrupt file, or one of the wrong rank, dtype
or shape, is reported at once, naming the file and the ``image_ids.txt`` line of its id (the
values, NaN and range, are checked as each map is read); :func:`check_mask_files` does the same
for the existence of every mask file.

GT boxes are rescaled to 224x224 as ``int(float(x) * 224 / width)`` (truncation). The batched
evaluation is :mod:`infocam_jax.evaluation.scoremaps.score`; writing this layout is
:mod:`infocam_jax.evaluation.scoremaps.write`.
"""
from __future__ import annotations

import functools
import io
import math
import os

import numpy as np

from infocam_jax.data.masks import RESIZE_LENGTH
from infocam_jax.data.wsol_metadata import Metadata

__all__ = ["MASK_DATASETS", "check_mask_files", "check_scoremap_files", "gt_boxes",
           "load_scoremap",
           "npy_header", "resize_boxes", "scoremap_path"]

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
    _check_layout(path, m.shape, m.dtype, shape)
    if np.isnan(m).any():
        raise ValueError(f"score map {path} contains NaN")
    lo, hi = (float(m.min()), float(m.max())) if m.size else (0.0, 0.0)
    if lo < 0 or hi > 1:
        raise ValueError(f"score map {path} must lie in [0, 1], got values in [{lo}, {hi}]")
    return m


def _check_layout(path: str, shape: tuple, dtype, expected: tuple | None, where: str = ""):
    """Raises unless ``shape`` is 2-D, ``dtype`` floating point and ``shape == expected``
    (when given); ``where`` is appended to the message."""
    if len(shape) != 2:
        raise ValueError(f"score map {path}{where} must be 2-D (H, W), got shape {shape}")
    if np.dtype(dtype).kind != "f":  # np.issubdtype(dtype, np.floating), 20x cheaper
        raise ValueError(f"score map {path}{where} must have a floating-point dtype, got "
                         f"{dtype}")
    if expected is not None and tuple(shape) != tuple(expected):
        raise ValueError(f"score map {path}{where} has shape {tuple(shape)}, expected "
                         f"{tuple(expected)} like the other maps")


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
_MAX_HEADER = 12 + 10000  # numpy's read_array_header rejects longer headers (max_header_size)


@functools.lru_cache(maxsize=64)
def _parse_header(raw: bytes) -> tuple:
    """``(shape, dtype)`` of the header bytes ``raw`` (magic, version, length, dict) by
    ``read_magic`` + ``read_array_header_{1,2}_0``; cached: the maps of a tree share a few
    headers, and parsing one (``ast.literal_eval``) costs far more than reading it."""
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    if version not in _HEADER_READERS:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, _, dtype = _HEADER_READERS[version](f)
    if f.tell() != len(raw):
        raise ValueError("header length mismatch")
    return tuple(shape), dtype


def _header_bytes(fd: int) -> bytes:
    """The header bytes of the ``.npy`` file open as ``fd`` (shorter when the file is cut):
    one read for headers up to 256 bytes (``np.save`` writes 128)."""
    head = os.read(fd, 256)
    if len(head) < 12 or head[:6] != np.lib.format.MAGIC_PREFIX:
        return head
    n = 10 + int.from_bytes(head[8:10], "little") if head[6] == 1 else \
        12 + int.from_bytes(head[8:12], "little")
    if n > len(head) == 256:
        head += os.read(fd, min(n, _MAX_HEADER) - 256)
    return head[:n]


def npy_header(path: str, where: str = "") -> tuple:
    """``(shape, dtype)`` from the header of a ``.npy`` file, without reading its data.

    Raises:
      ValueError naming ``path`` (and ``where``) when the file is missing, is not a ``.npy``
      file of format 1.0 / 2.0, has a corrupt header, or holds fewer data bytes than its header
      announces (a truncated file).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            raw, size = _header_bytes(fd), os.fstat(fd).st_size
        finally:
            os.close(fd)
        shape, dtype = _parse_header(raw)
        offset = len(raw)
    except FileNotFoundError:
        raise ValueError(f"score map not found: {path}{where}") from None
    except (OSError, ValueError, SyntaxError, TypeError) as e:  # the header parser raises these
        raise ValueError(f"score map {path}{where} could not be read as .npy: {e}") from None
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
        raise ValueError(f"score map {path}{where} is truncated: its header announces "
                         f"{shape} {dtype} ({need} bytes in all), the file has {size}")
    return tuple(shape), dtype


def check_scoremap_files(paths, where=None) -> tuple:
    """The pre-pass: every map exists and its ``.npy`` header (only the header is read) says 2-D
    floating point of one shape; returns that ``(H, W)``.

    Args:
      paths: the ``.npy`` path of each image, in ``image_ids.txt`` order.
      where: optional text per path for the messages (e.g. ``" (image_ids.txt:12, id 'x')"``).

    Raises:
      ValueError naming the first bad file (and its ``where``).
    """
    where = [""] * len(paths) if where is None else list(where)
    shape = None
    for path, w in zip(paths, where):
        s, dtype = npy_header(path, w)
        _check_layout(path, s, dtype, shape, w)
        shape = s
    return shape


def check_mask_files(mask_dir: str, metadata: Metadata) -> None:
    """The pre-pass of a mask dataset: every instance and ignore mask that ``localization.txt``
    names exists under ``mask_dir`` (decoding waits for the stream).

    Raises:
      ValueError naming the first missing file, its image id and ``image_ids.txt`` line.
    """
    ids_file = os.path.join(metadata.directory, "image_ids.txt")
    for image_id in metadata.image_ids:
        ignore = metadata.ignore_paths.get(image_id, "")
        for p in metadata.mask_paths[image_id] + ([ignore] if ignore else []):
            path = os.path.join(mask_dir, p)
            if not os.path.isfile(path):
                raise ValueError(f"mask not found: {path} (id {image_id!r}, "
                                 f"{ids_file}:{metadata.id_lines[image_id]})")
