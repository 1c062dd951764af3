"""Helpers shared by the manual-directory tfds builders (CUB-200-2011, Tiny-ImageNet).

No TensorFlow: builders write ``array_record`` and images reach ``tfds.features.Image`` as
encoded JPEG bytes.
"""
from __future__ import annotations

import io
import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image


class AnnotationError(ValueError):
    """An annotation file is inconsistent (ids without boxes, labels out of range, ...)."""


def resolve_root(manual_dir: str | os.PathLike, dirname: str, required: Sequence[str],
                 *, how_to_get: str) -> pathlib.Path:
    """Finds the dataset root (``manual_dir`` itself or ``manual_dir/dirname``) and checks files.

    Args:
      manual_dir: the user's directory (config.manual_dir).
      dirname: the official top-level directory name, e.g. "CUB_200_2011".
      required: paths relative to the root that must exist.
      how_to_get: where the dataset can be obtained (for the error message).

    Returns:
      The root directory.

    Raises:
      FileNotFoundError: naming every missing file, where to obtain the dataset and where to put it.
    """
    if not manual_dir:
        raise FileNotFoundError(
            f"config.manual_dir is empty: set it to the directory holding {dirname}/ "
            f"(needs {', '.join(required)}). {how_to_get}")
    manual_dir = pathlib.Path(manual_dir).expanduser()
    candidates = [manual_dir / dirname, manual_dir]
    root = next((c for c in candidates if (c / required[0]).exists()), candidates[0])
    missing = [r for r in required if not (root / r).exists()]
    if missing:
        raise FileNotFoundError(
            f"{dirname} not found: missing {', '.join(str(root / m) for m in missing)}. "
            f"{how_to_get} Extract it so that {manual_dir}/{dirname}/ holds "
            f"{', '.join(required)}, and point config.manual_dir at {manual_dir}.")
    return root


def read_lines(path: pathlib.Path) -> list[list[str]]:
    """Non-empty lines of a whitespace-separated annotation file, split into fields."""
    with open(path, "r", encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def parse_fields(path: pathlib.Path, num_fields: int) -> list[list[str]]:
    """Like :func:`read_lines` but every line must have exactly ``num_fields`` fields."""
    rows = read_lines(path)
    for lineno, row in enumerate(rows, 1):
        if len(row) != num_fields:
            raise AnnotationError(
                f"{path}: line {lineno} has {len(row)} fields, expected {num_fields}: {row}")
    return rows


def encoded_rgb_image(path: pathlib.Path) -> tuple[bytes, int, int]:
    """Reads an image file as encoded bytes for ``tfds.features.Image``.

    The file is decoded once with PIL to validate it and get its size. RGB JPEGs are passed on
    as the file's own bytes; anything else (grayscale, CMYK, PNG, ...) is converted to RGB and
    re-encoded as JPEG (quality 95) so every record decodes to ``uint8 [H, W, 3]``.

    Returns:
      (jpeg bytes, height, width).

    Raises:
      FileNotFoundError: the file is missing.
      ValueError: the file cannot be decoded (names the file).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            fmt, mode = im.format, im.mode
            width, height = im.size
            if fmt != "JPEG" or mode != "RGB":
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="JPEG", quality=95)
                data = buf.getvalue()
    except Exception as e:  # PIL raises several types for corrupt data.
        raise ValueError(f"corrupt or unreadable image file {path}: {e}") from e
    return data, height, width


def check_box_in_image(box: np.ndarray, height: int, width: int, *, where: str) -> None:
    """Raises AnnotationError when a (x0, y0, x1, y1) box is inverted or misses the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 >= x0 and y1 >= y0):
        raise AnnotationError(f"{where}: inverted box {box.tolist()}")
    if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
        raise AnnotationError(
            f"{where}: box {box.tolist()} lies outside the {width}x{height} image")


def single_box_records(examples):
    """Yields ``(key, record)`` for one-object images (CUB, Tiny-ImageNet).

    Each example is a dict with ``key``, ``path``, ``label`` (int) and ``box`` (float32 ``[4]``,
    ``(x0, y0, x1, y1)`` in original pixels); the image is read, validated and re-encoded once
    (:func:`encoded_rgb_image`) and the box checked against its size.
    """
    for e in examples:
        data, height, width = encoded_rgb_image(e["path"])
        check_box_in_image(e["box"], height, width, where=str(e["path"]))
        yield e["key"], {
            "image": data,
            "label": e["label"],
            "boxes": e["box"][None, :],
            "box_labels": np.array([e["label"]], np.int32),
            "image_id": e["key"],
        }


def single_box_features(num_classes: int):
    """The tfds feature spec of :func:`single_box_records` (RGB JPEG, one box per image)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=num_classes),
        "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        "box_labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "image_id": tfds.features.Text(),
    })
