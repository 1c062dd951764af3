"""CUB-200-2011 as a tensorflow-datasets builder (manual directory, array_record, no TensorFlow).

Source: the official ``CUB_200_2011/`` directory (https://www.vision.caltech.edu/datasets/cub_200_2011/,
file ``CUB_200_2011.tgz``)::

    CUB_200_2011/images.txt              <image_id> <relative path under images/>
    CUB_200_2011/image_class_labels.txt  <image_id> <class_id in 1..200>
    CUB_200_2011/train_test_split.txt    <image_id> <1 = train, 0 = test>
    CUB_200_2011/bounding_boxes.txt      <image_id> <x> <y> <width> <height>
    CUB_200_2011/images/...              the JPEGs
    CUB_200_2011/classes.txt             optional, <class_id> <name>

Splits: ``train`` = the official training images (5,994); the official test images (5,794) are
split per class, deterministically (``splits.stratified_halves``, seed 0), into ``validation``
and ``test`` halves as in the paper (section 4).

Records (``builder.as_data_source(split)[i]``): ``image`` uint8 [H, W, 3] (original size),
``label`` int (0..199), ``boxes`` float32 [1, 4], ``box_labels`` int32 [1], ``image_id`` bytes.

Box convention: the reference WSOL metadata (Choe et al., CVPR 2020, wsolevaluation) turns the
official ``(x, y, w, h)`` into ``(x0, y0, x1, y1) = (x, y, x + w, y + h)`` in pixels of the
original image, kept as floats until after resizing; we store exactly that, so ``x1`` may equal
the image width (the transforms clip it to ``W - 1``). Evaluation then counts pixels inclusively.

The tfds catalog builder ``caltech_birds2011`` is an alternative source when TensorFlow is
installed (its generator needs TF): :func:`catalog_sources` reads it and adapts its records to
the format above; it is never used in tests.
"""
from __future__ import annotations

import functools
import os
import pathlib
import sys

import numpy as np

from infocam_jax.data import builder_utils, splits

NUM_CLASSES = 200
DIRNAME = "CUB_200_2011"
REQUIRED_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt",
                  "bounding_boxes.txt", "images")
HOW_TO_GET = ("Download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
              "(or https://data.caltech.edu/records/65de6-vhk41).")
SPLIT_SEED = splits.DEFAULT_SPLIT_SEED

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
{HOW_TO_GET} Extract it and pass the directory holding CUB_200_2011/ (or CUB_200_2011/ itself) as
the manual dir (config.manual_dir); it must contain {', '.join(REQUIRED_FILES)}.
"""


def parse_annotations(root: pathlib.Path) -> dict:
    """Parses and cross-checks the CUB annotation files.

    Returns:
      {"train": [...], "test": [...]} lists of example dicts (key, path, label 0-based,
      box float32 [4] as (x, y, x+w, y+h)), and "class_names" (list of 200 str).

    Raises:
      AnnotationError: an id missing from a file, duplicated, a label outside 1..200, a bad
        split flag or a non-positive box size.
    """
    err = builder_utils.AnnotationError

    def as_map(name, num_fields):
        path = root / name
        out = {}
        for row in builder_utils.parse_fields(path, num_fields):
            if row[0] in out:
                raise err(f"{path}: image id {row[0]} appears twice")
            out[row[0]] = row[1:]
        return out

    images = as_map("images.txt", 2)
    labels = as_map("image_class_labels.txt", 2)
    split_flags = as_map("train_test_split.txt", 2)
    bboxes = as_map("bounding_boxes.txt", 5)
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split_flags),
                        ("bounding_boxes.txt", bboxes)):
        missing = sorted(set(images) - set(table), key=_id_order)
        extra = sorted(set(table) - set(images), key=_id_order)
        if missing:
            raise err(f"{root / name}: no entry for image ids {missing[:10]}"
                      f"{' ...' if len(missing) > 10 else ''} listed in {root / 'images.txt'}")
        if extra:
            raise err(f"{root / name}: image ids {extra[:10]} are not in {root / 'images.txt'}")

    out = {"train": [], "test": []}
    for image_id in sorted(images, key=_id_order):
        rel = images[image_id][0]
        try:
            label = int(labels[image_id][0])
        except ValueError:
            raise err(f"{root / 'image_class_labels.txt'}: bad label for id {image_id}") from None
        if not 1 <= label <= NUM_CLASSES:
            raise err(f"{root / 'image_class_labels.txt'}: label {label} of image id {image_id} "
                      f"is outside 1..{NUM_CLASSES}")
        flag = split_flags[image_id][0]
        if flag not in ("0", "1"):
            raise err(f"{root / 'train_test_split.txt'}: split flag {flag!r} of image id "
                      f"{image_id} is not 0 or 1")
        try:
            x, y, w, h = (float(v) for v in bboxes[image_id])
        except ValueError:
            raise err(f"{root / 'bounding_boxes.txt'}: bad box for id {image_id}") from None
        if w <= 0 or h <= 0:
            raise err(f"{root / 'bounding_boxes.txt'}: box of image id {image_id} has "
                      f"non-positive size {w}x{h}")
        out["train" if flag == "1" else "test"].append({
            "key": rel, "path": root / "images" / rel, "label": label - 1,
            "box": np.array([x, y, x + w, y + h], np.float32)})
    class_names = [f"class_{i + 1:03d}" for i in range(NUM_CLASSES)]
    if (root / "classes.txt").exists():
        for row in builder_utils.read_lines(root / "classes.txt"):
            if len(row) >= 2 and row[0].isdigit() and 1 <= int(row[0]) <= NUM_CLASSES:
                class_names[int(row[0]) - 1] = " ".join(row[1:])
    out["class_names"] = class_names
    return out


def _id_order(image_id: str):
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


def _load_splits(root: pathlib.Path):
    """(train, official test, metadata) for :func:`builder_utils.single_box_builder_class`."""
    ann = parse_annotations(root)
    missing = [str(e["path"]) for e in ann["train"] + ann["test"] if not e["path"].is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image files listed in {root / 'images.txt'} are missing, "
            f"e.g. {missing[:5]}. {HOW_TO_GET}")
    return ann["train"], ann["test"], {"class_names": ann["class_names"]}


@functools.cache
def builder_class():
    """The tfds builder class (created on first use so importing this module stays cheap)."""
    return builder_utils.single_box_builder_class(
        "InfocamCub", sys.modules[__name__],
        doc="CUB-200-2011 with boxes and the paper's validation/test split of the official "
            "test set.",
        description="CUB-200-2011 birds with one box per image (infocam-jax).",
        homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        load_splits=_load_splits)


def prepare(*, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None):
    """Builds (once) and returns the CUB builder; read with ``builder.as_data_source(split)``.

    Args:
      data_dir: tfds data dir where the array_record files are cached.
      manual_dir: directory holding ``CUB_200_2011/`` (or that directory itself). Not needed
        once the dataset has been prepared in ``data_dir``.

    Raises:
      FileNotFoundError: the manual files are missing (message says where to get them).
      AnnotationError / ValueError: inconsistent annotations or a corrupt image (named).
    """
    return builder_utils.prepare_builder(sys.modules[__name__], data_dir=data_dir,
                                         manual_dir=manual_dir)


def tensorflow_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("tensorflow") is not None


class _CatalogSplit:
    """Adapts records of the catalog ``caltech_birds2011`` builder to this module's format."""

    def __init__(self, source, indices=None):
        self._source = source
        self._indices = np.arange(len(source)) if indices is None else np.asarray(indices)

    def __len__(self):
        return len(self._indices)

    def __getitem__(self, i):
        r = self._source[int(self._indices[i])]
        image = np.asarray(r["image"])
        h, w = image.shape[:2]
        # tfds BBoxFeature: normalised (ymin, xmin, ymax, xmax).
        ymin, xmin, ymax, xmax = np.asarray(r["bbox"], np.float32)
        box = np.array([[xmin * w, ymin * h, xmax * w, ymax * h]], np.float32)
        label = int(r["label"])
        return {"image": image, "label": label, "boxes": box,
                "box_labels": np.array([label], np.int32)}


def catalog_sources(*, data_dir: str | os.PathLike) -> dict:
    """CUB from the tfds catalog builder ``caltech_birds2011`` (needs TensorFlow and a download).

    Returns:
      {"train", "validation", "test"} random-access sources of records in this module's format
      (validation/test: the paper's halves of the catalog's test split), and
      "train_label_counts" (int [200]).

    Raises:
      ImportError: TensorFlow is not installed (the catalog generator needs it).
    """
    if not tensorflow_available():
        raise ImportError(
            "the tfds catalog builder caltech_birds2011 needs TensorFlow (pip install tensorflow); "
            f"without it use the manual directory: {MANUAL_DOWNLOAD_INSTRUCTIONS}")
    import tensorflow_datasets as tfds

    builder = tfds.builder("caltech_birds2011", data_dir=os.fspath(data_dir),
                           file_format="array_record")
    builder.download_and_prepare()
    train = builder.as_data_source("train")
    test = builder.as_data_source("test")

    def labels_of(split):
        src = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
        return np.array([int(src[i]["label"]) for i in range(len(src))], np.int64)

    val_idx, test_idx = splits.stratified_halves(labels_of("test"), seed=SPLIT_SEED)
    return {"train": _CatalogSplit(train), "validation": _CatalogSplit(test, val_idx),
            "test": _CatalogSplit(test, test_idx),
            "train_label_counts": np.bincount(labels_of("train"), minlength=NUM_CLASSES)}
