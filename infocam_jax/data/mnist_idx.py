"""Strict reader of the four standard MNIST IDX files (no TensorFlow, no network).

MNIST is distributed as four IDX files (LeCun, Cortes & Burges, http://yann.lecun.com/exdb/mnist/,
mirrored e.g. by torchvision and by tfds ``mnist``)::

    train-images-idx3-ubyte.gz   magic 2051, uint8 [60000, 28, 28]
    train-labels-idx1-ubyte.gz   magic 2049, uint8 [60000]
    t10k-images-idx3-ubyte.gz    magic 2051, uint8 [10000, 28, 28]
    t10k-labels-idx1-ubyte.gz    magic 2049, uint8 [10000]

Each file may be gzip-compressed (``.gz``) or not; both names are looked up. Anything that does
not match the format (wrong magic number, wrong dimensions, truncated or trailing data, label
and image counts that differ, labels outside 0..9, missing files) raises an error naming the
file, never a silently wrong array.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import zlib

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SHAPE = (28, 28)

#: split -> (images file, labels file), names without the optional ``.gz`` suffix.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_EXPECTED = ", ".join(f"{name}.gz" for pair in MNIST_FILES.values() for name in pair)
WHERE_TO_GET_MNIST = (
    f"MNIST is expected as the four standard IDX files ({_EXPECTED}; uncompressed copies without "
    "'.gz' are accepted too) in one directory. Get them from http://yann.lecun.com/exdb/mnist/ "
    "(or a mirror such as https://ossci-datasets.s3.amazonaws.com/mnist/ used by torchvision), "
    "or prepare tfds 'mnist' and use load_mnist_tfds()."
)


def _read_bytes(path: pathlib.Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":  # not gzip: a raw IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{path}: corrupt or truncated gzip stream ({err}). {WHERE_TO_GET_MNIST}"
        ) from err


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Reads one uint8 IDX file (gzip-compressed or raw).

    Args:
      path: the file.
      expected_magic: 2051 (images, 3 dims) or 2049 (labels, 1 dim); None accepts any uint8 IDX.

    Returns:
      uint8 array with the dimensions stored in the header, e.g. [N, 28, 28] or [N].

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: wrong magic number, non-uint8 data type, truncated header or data, or bytes
        after the data. The message names the file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST IDX file not found: {path}. {WHERE_TO_GET_MNIST}")
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes). {WHERE_TO_GET_MNIST}")
    magic = int.from_bytes(data[:4], "big")
    zeros, dtype_code, ndim = data[0:2], data[2], data[3]
    if (
        zeros != b"\x00\x00"
        or dtype_code != 0x08
        or (expected_magic is not None and magic != expected_magic)
    ):
        want = f"{expected_magic}" if expected_magic is not None else "0x000008NN (uint8 IDX)"
        raise ValueError(
            f"{path}: wrong IDX magic number {magic} (expected {want}); not an MNIST "
            f"IDX file or corrupt. {WHERE_TO_GET_MNIST}"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header ({len(data)} < {header_len} bytes). {WHERE_TO_GET_MNIST}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected_len:
        raise ValueError(
            f"{path}: truncated IDX data: header announces dims {dims} = "
            f"{expected_len - header_len} bytes but only {len(data) - header_len} follow. "
            f"{WHERE_TO_GET_MNIST}"
        )
    if len(data) > expected_len:
        raise ValueError(
            f"{path}: {len(data) - expected_len} unexpected bytes after the IDX data "
            f"(dims {dims}); corrupt file. {WHERE_TO_GET_MNIST}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def _find(directory: pathlib.Path, name: str) -> pathlib.Path:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {name}.gz (or {name}) not found in {directory}. {WHERE_TO_GET_MNIST}"
    )


def load_mnist_split(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads one MNIST split ("train" or "test") from the IDX files in `directory`.

    Returns:
      (images uint8 [N, 28, 28], labels uint8 [N]) with N = 60000 (train) / 10000 (test) for
      the real files (any N is accepted as long as images and labels agree).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {directory} does not exist. {WHERE_TO_GET_MNIST}")
    image_name, label_name = MNIST_FILES[split]
    image_path, label_path = _find(directory, image_name), _find(directory, label_name)
    images = read_idx(image_path, IMAGES_MAGIC)
    labels = read_idx(label_path, LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{image_path}: image dims {images.shape[1:]} (ndim {images.ndim}), expected "
            f"[N, 28, 28]. {WHERE_TO_GET_MNIST}"
        )
    if labels.ndim != 1:
        raise ValueError(
            f"{label_path}: label dims {labels.shape}, expected [N]. {WHERE_TO_GET_MNIST}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST count mismatch: {image_path} holds {images.shape[0]} images but "
            f"{label_path} holds {labels.shape[0]} labels. {WHERE_TO_GET_MNIST}"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(
            f"{label_path}: label {int(labels.max())} outside 0..9. {WHERE_TO_GET_MNIST}"
        )
    return images, labels


def load_mnist(directory: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loads both MNIST splits from the four IDX files in `directory`.

    Returns:
      {"train": (images uint8 [60000, 28, 28], labels uint8 [60000]),
       "test": (images uint8 [10000, 28, 28], labels uint8 [10000])}.

    Raises:
      FileNotFoundError: directory or one of the four files missing (message lists the expected
        names and where to get them).
      ValueError: a malformed file (see `read_idx`) or mismatched counts.
    """
    return {split: load_mnist_split(directory, split) for split in MNIST_FILES}


def load_mnist_tfds(
    data_dir: str | os.PathLike | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loads MNIST from an already prepared tfds ``mnist`` (array_record format); never downloads.

    Prepare it once, where the network allows, with
    ``tfds.builder("mnist", data_dir=..., file_format="array_record").download_and_prepare()``.

    Returns:
      Same structure as `load_mnist`.

    Raises:
      FileNotFoundError: tfds ``mnist`` is not prepared in `data_dir`.
      ValueError: it is prepared in a format without random access (e.g. tfrecord, which would
        need TensorFlow).
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    builder = tfds.builder("mnist", data_dir=None if data_dir is None else os.fspath(data_dir))
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"tfds 'mnist' is not prepared in {builder.data_dir}; this function never "
            f"downloads. {WHERE_TO_GET_MNIST}"
        )
    out = {}
    for split in MNIST_FILES:
        try:
            source = builder.as_data_source(split)
        except Exception as err:  # tfds raises NotImplementedError/ValueError by file format
            raise ValueError(
                f"tfds 'mnist' in {builder.data_dir} cannot be read without TensorFlow "
                f"({err}); prepare it with file_format='array_record'."
            ) from err
        records = [source[i] for i in range(len(source))]
        images = np.stack([np.asarray(r["image"], np.uint8).reshape(IMAGE_SHAPE) for r in records])
        labels = np.asarray([r["label"] for r in records], np.uint8)
        out[split] = (images, labels)
    return out
