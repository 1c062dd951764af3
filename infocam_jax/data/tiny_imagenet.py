"""Tiny-ImageNet as a tensorflow-datasets builder (manual directory, array_record, no TensorFlow).

Source: the official ``tiny-imagenet-200/`` directory
(http://cs231n.stanford.edu/tiny-imagenet-200.zip)::

    tiny-imagenet-200/wnids.txt                         one WordNet id per line (200)
    tiny-imagenet-200/words.txt                         <wnid> \\t <names>
    tiny-imagenet-200/train/<wnid>/images/*.JPEG        500 images per class, 64x64
    tiny-imagenet-200/train/<wnid>/<wnid>_boxes.txt     <file> \\t x0 \\t y0 \\t x1 \\t y1
    tiny-imagenet-200/val/images/*.JPEG                 10,000 images
    tiny-imagenet-200/val/val_annotations.txt           <file> \\t <wnid> \\t x0 \\t y0 \\t x1 \\t y1

(the unlabeled ``test/`` directory is not used). Class ids are the positions of the wnids in
sorted order (what ``torchvision.datasets.ImageFolder`` assigns to ``train/``). Boxes are the
official inclusive pixel corners ``(x0, y0, x1, y1)``.

Splits: ``train`` = official train; the official validation images (50 per class) are split
per class, deterministically (``splits.stratified_halves``, seed 0), into ``validation`` and
``test`` halves (the paper, section 4).

Records: ``image`` uint8 [64, 64, 3] (grayscale files converted to RGB), ``label`` int,
``boxes`` float32 [1, 4], ``box_labels`` int32 [1], ``image_id`` bytes.
"""
from __future__ import annotations

import functools
import os
import pathlib
import sys

import numpy as np

from infocam_jax.data import builder_utils, splits

NUM_CLASSES = 200
DIRNAME = "tiny-imagenet-200"
REQUIRED_FILES = ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt")
HOW_TO_GET = "Download tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip."
SPLIT_SEED = splits.DEFAULT_SPLIT_SEED
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
{HOW_TO_GET} Unzip it and pass the directory holding tiny-imagenet-200/ (or tiny-imagenet-200/
itself) as the manual dir (config.manual_dir); it must contain {', '.join(REQUIRED_FILES)}.
"""


def _list_images(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _annotated_images(directory: pathlib.Path, annotated, ann_file: pathlib.Path, *,
                      unannotated: str, absent: str) -> list[str]:
    """The sorted image names in ``directory``, which must be exactly the keys of ``annotated``.

    Raises:
      AnnotationError: "{ann_file}: {unannotated} [names] in {directory}" for images without an
        annotation, or "{ann_file}: {absent} [names] missing from {directory}" for annotations
        without an image (at most 10 names each).
    """
    files = _list_images(directory)
    no_ann = sorted(set(files) - set(annotated))
    no_file = sorted(set(annotated) - set(files))
    if no_ann:
        raise builder_utils.AnnotationError(
            f"{ann_file}: {unannotated} {no_ann[:10]} in {directory}")
    if no_file:
        raise builder_utils.AnnotationError(
            f"{ann_file}: {absent} {no_file[:10]} missing from {directory}")
    return files


def _parse_box(row, path, lineno):
    try:
        return np.array([float(v) for v in row], np.float32)
    except ValueError:
        raise builder_utils.AnnotationError(f"{path}: line {lineno}: bad box {row}") from None


def parse_annotations(root: pathlib.Path) -> dict:
    """Parses and cross-checks the Tiny-ImageNet annotations.

    Returns:
      {"train": [...], "val": [...]} lists of example dicts (key, path, label, box float32 [4]),
      "wnids" (sorted list) and "class_names" (words.txt names, same order).

    Raises:
      FileNotFoundError: a class directory or its boxes file is missing.
      AnnotationError: duplicate/unknown wnids, an image without a box or a box without an image,
        a validation annotation naming an unknown wnid, more than 200 classes.
    """
    err = builder_utils.AnnotationError
    wnids = [row[0] for row in builder_utils.read_lines(root / "wnids.txt")]
    if len(set(wnids)) != len(wnids):
        raise err(f"{root / 'wnids.txt'}: duplicate wnids")
    if not wnids or len(wnids) > NUM_CLASSES:
        raise err(f"{root / 'wnids.txt'}: expected 1..{NUM_CLASSES} wnids, got {len(wnids)}")
    wnids = sorted(wnids)
    label_of = {w: i for i, w in enumerate(wnids)}
    words = {}
    with open(root / "words.txt", "r", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 1)
            if len(parts) == 2:
                words[parts[0]] = parts[1]
    no_words = [w for w in wnids if w not in words]
    if no_words:
        raise err(f"{root / 'words.txt'}: no entry for wnids {no_words[:10]}")

    train = []
    for wnid in wnids:
        class_dir = root / "train" / wnid
        box_file = class_dir / f"{wnid}_boxes.txt"
        for p in (class_dir / "images", box_file):
            if not p.exists():
                raise FileNotFoundError(f"missing {p} (wnid {wnid} is listed in "
                                        f"{root / 'wnids.txt'}). {HOW_TO_GET}")
        boxes = {}
        for lineno, row in enumerate(builder_utils.parse_fields(box_file, 5), 1):
            if row[0] in boxes:
                raise err(f"{box_file}: line {lineno}: {row[0]} has two boxes")
            boxes[row[0]] = _parse_box(row[1:], box_file, lineno)
        files = _annotated_images(class_dir / "images", boxes, box_file,
                                  unannotated="no box for images", absent="boxes for images")
        train += [{"key": f"train/{wnid}/{name}", "path": class_dir / "images" / name,
                   "label": label_of[wnid], "box": boxes[name]} for name in files]

    ann_file = root / "val" / "val_annotations.txt"
    val_ann = {}
    for lineno, row in enumerate(builder_utils.parse_fields(ann_file, 6), 1):
        name, wnid = row[0], row[1]
        if wnid not in label_of:
            raise err(f"{ann_file}: line {lineno}: unknown wnid {wnid} (not in wnids.txt)")
        if name in val_ann:
            raise err(f"{ann_file}: line {lineno}: {name} is annotated twice")
        val_ann[name] = (label_of[wnid], _parse_box(row[2:], ann_file, lineno))
    files = _annotated_images(root / "val" / "images", val_ann, ann_file,
                              unannotated="no annotation for images", absent="annotated images")
    val = [{"key": f"val/{name}", "path": root / "val" / "images" / name,
            "label": val_ann[name][0], "box": val_ann[name][1]} for name in files]
    return {"train": train, "val": val, "wnids": wnids,
            "class_names": [words[w] for w in wnids]}


def _load_splits(root: pathlib.Path):
    """(train, official val, metadata) for :func:`builder_utils.single_box_builder_class`."""
    ann = parse_annotations(root)
    return ann["train"], ann["val"], {"wnids": ann["wnids"], "class_names": ann["class_names"]}


@functools.cache
def builder_class():
    """The tfds builder class (created on first use so importing this module stays cheap)."""
    return builder_utils.single_box_builder_class(
        "InfocamTinyImagenet", sys.modules[__name__],
        doc="Tiny-ImageNet with boxes and the paper's validation/test split of the official "
            "val set.",
        description="Tiny-ImageNet (200 classes, 64x64) with one box per image.",
        homepage="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        load_splits=_load_splits)


def prepare(*, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None):
    """Builds (once) and returns the Tiny-ImageNet builder; read with ``as_data_source(split)``.

    Args:
      data_dir: tfds data dir where the array_record files are cached.
      manual_dir: directory holding ``tiny-imagenet-200/`` (or that directory itself); not
        needed once prepared.

    Raises:
      FileNotFoundError: manual files missing (message says where to get them and put them).
      AnnotationError / ValueError: inconsistent annotations or a corrupt image (named).
    """
    return builder_utils.prepare_builder(sys.modules[__name__], data_dir=data_dir,
                                         manual_dir=manual_dir)
