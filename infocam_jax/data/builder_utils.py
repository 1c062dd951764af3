"""Helpers shared by the manual-directory tfds builders (CUB-200-2011, Tiny-ImageNet).

No TensorFlow: builders write ``array_record`` and images reach ``tfds.features.Image`` as
encoded JPEG bytes.
"""
from __future__ import annotations

import io
import os
import pathlib
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from infocam_jax.data import splits


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


def single_box_builder_class(class_name: str, dataset, *, doc: str, description: str,
                             homepage: str, load_splits: Callable[[pathlib.Path], tuple]):
    """Creates the tfds builder class of a one-box-per-image manual-directory dataset.

    Args:
      class_name: the class name; tfds names the dataset ``snake_case(class_name)``.
      dataset: the dataset's module (the class is defined as if there); it defines
        ``NUM_CLASSES``, ``DIRNAME``, ``REQUIRED_FILES``, ``HOW_TO_GET``, ``SPLIT_SEED`` and
        ``MANUAL_DOWNLOAD_INSTRUCTIONS``.
      doc, description, homepage: the class docstring and the DatasetInfo texts.
      load_splits: ``root -> (train, heldout, metadata)``: two lists of
        :func:`single_box_records` examples and a dict of extra ``info.metadata`` entries.

    Returns:
      A ``GeneratorBasedBuilder`` subclass (version 1.0.0) whose splits are ``train`` and the
      per-class halves of ``heldout`` (the official evaluation images) by
      ``splits.stratified_halves(seed=SPLIT_SEED)``: ``validation`` and ``test``.
      ``info.metadata`` gets ``train_label_counts`` (int list [NUM_CLASSES]), then the extras.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=single_box_features(dataset.NUM_CLASSES),
            homepage=homepage,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        root = resolve_root(dl_manager.manual_dir, dataset.DIRNAME, dataset.REQUIRED_FILES,
                            how_to_get=dataset.HOW_TO_GET)
        train, heldout, metadata = load_splits(root)
        val_idx, test_idx = splits.stratified_halves([e["label"] for e in heldout],
                                                     seed=dataset.SPLIT_SEED)
        counts = np.bincount([e["label"] for e in train], minlength=dataset.NUM_CLASSES)
        self.info.metadata["train_label_counts"] = counts.tolist()
        self.info.metadata.update(metadata)
        return {
            "train": self._generate_examples(train),
            "validation": self._generate_examples([heldout[i] for i in val_idx]),
            "test": self._generate_examples([heldout[i] for i in test_idx]),
        }

    def _generate_examples(self, examples):
        return single_box_records(examples)

    # type() rather than a class statement so that tfds registers the builder under its own
    # name and module (registration happens when the class is created).
    return type(class_name, (tfds.core.GeneratorBasedBuilder,), {
        "__module__": dataset.__name__, "__qualname__": class_name, "__doc__": doc,
        "VERSION": tfds.core.Version("1.0.0"),
        "RELEASE_NOTES": {"1.0.0": "Initial release."},
        "MANUAL_DOWNLOAD_INSTRUCTIONS": dataset.MANUAL_DOWNLOAD_INSTRUCTIONS,
        "_info": _info, "_split_generators": _split_generators,
        "_generate_examples": _generate_examples,
    })


def prepare_builder(dataset, *, data_dir: str | os.PathLike,
                    manual_dir: str | os.PathLike | None):
    """Instantiates ``dataset.builder_class()`` (array_record) in ``data_dir``, prepared once.

    ``dataset`` is the dataset's module (see :func:`single_box_builder_class`); ``manual_dir`` is
    resolved (:func:`resolve_root`) only when the dataset is not prepared yet.
    """
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    builder = dataset.builder_class()(data_dir=os.fspath(data_dir), file_format="array_record")
    if not builder.is_prepared():
        root = resolve_root(manual_dir, dataset.DIRNAME, dataset.REQUIRED_FILES,
                            how_to_get=dataset.HOW_TO_GET)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(root), try_download_gcs=False))
    return builder
