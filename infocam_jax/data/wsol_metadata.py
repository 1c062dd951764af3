"""Datasets described in the reference WSOL metadata format (clovaai/wsolevaluation).

``config.dataset = "wsol_metadata"`` trains and evaluates on any dataset laid out as the
reference evaluation expects (Choe et al., CVPR 2020, "Evaluating WSOL methods right"):

* images under ``config.manual_dir`` (the reference's ``<data_root>/<dataset_name>``), named by
  their image ids (e.g. ``val2/0/0.jpeg``, ``001.Black_footed_Albatross/x.jpg``);
* ``<config.wsol_metadata_root>/<split>/`` holding ``image_ids.txt`` (one id per line),
  ``class_labels.txt`` (``id,label``), ``image_sizes.txt`` (``id,width,height``) and
  ``localization.txt``: ``id,x0,y0,x1,y1`` (box datasets, one line per box: ILSVRC has several)
  or ``id,mask_path,ignore_path`` (mask datasets, OpenImages30k: one line per instance mask,
  masks under ``config.wsol_mask_root``);
* our splits map to the reference's: ``train`` -> ``train``, ``validation`` -> ``val`` (the
  reference's *train-fullsup* split, for threshold and model selection), ``test`` -> ``test``
  (``config.wsol_splits`` overrides the mapping).

Records (``source[i]``): ``image`` uint8 [H, W, 3] (original size), ``label`` int,
``boxes`` float32 [G, 4] inclusive ``(x0, y0, x1, y1)`` in original pixels, ``box_labels``
int32 [G], ``image_id`` str. Mask datasets give, as boxes, the bounding rectangle of each
instance mask (for the box metrics); with a ``mask_size`` the evaluation records also carry
``mask`` and ``ignore`` bool [S, S], the protocol's pixel ground truth for PxAP
(``infocam_jax.evaluation.pxap``), when the images are plainly resized to a square
``config.image_size`` (``eval_protocol="resize"`` or ``resize_size=0``). Training splits need no localisation files.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from infocam_jax.data.masks import load_mask

__all__ = ["SPLITS", "Metadata", "WsolMetadataSource", "read_metadata", "metadata_kind"]

SPLITS = {"train": "train", "validation": "val", "test": "test"}
_FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


def metadata_kind(directory: str) -> str:
    """"masks" when ``localization.txt`` has 3 fields per line, else "boxes"."""
    path = os.path.join(directory, "localization.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    return "masks" if len(line.rstrip("\r\n").split(",")) == 3 else "boxes"
    return "boxes"


@dataclasses.dataclass(frozen=True)
class Metadata:
    """One split's metadata.

    Attributes:
      directory: the folder the files were read from.
      kind: "boxes" or "masks".
      image_ids: the ids in ``image_ids.txt`` order.
      class_labels: id -> int label, or None when ``class_labels.txt`` is absent.
      image_sizes: id -> (width, height) (box datasets).
      boxes: id -> list of (x0, y0, x1, y1) in original image pixels (box datasets).
      mask_paths: id -> list of instance mask paths (mask datasets).
      ignore_paths: id -> ignore mask path, "" for none (mask datasets).
      id_lines: id -> its line number in ``image_ids.txt`` (for messages that name the line).
    """
    directory: str
    kind: str
    image_ids: tuple
    class_labels: dict | None
    image_sizes: dict
    boxes: dict
    mask_paths: dict
    ignore_paths: dict
    id_lines: dict = dataclasses.field(default_factory=dict)


def _lines(path: str, num_fields: int, what: str):
    """Yields (line number, fields) of a comma-separated file; blank lines are skipped."""
    if not os.path.isfile(path):
        raise ValueError(f"metadata file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(",")
            if len(fields) != num_fields:
                raise ValueError(f"{path}:{number}: expected {what} ({num_fields} comma-separated "
                                 f"fields), got {line!r}")
            yield number, fields


def _ints(path, number, fields, line_what):
    try:
        return tuple(int(x) for x in fields)
    except ValueError:
        raise ValueError(f"{path}:{number}: expected integers in {line_what}, got "
                         f"{','.join(fields)!r}") from None


def read_metadata(directory: str, kind: str = "boxes", localization: bool = True) -> Metadata:
    """Reads and checks ``<directory>/{image_ids,class_labels,image_sizes,localization}.txt``.

    Args:
      directory: ``<metadata_root>/<dataset_name>/<split>``.
      kind: "boxes" (``id,x0,y0,x1,y1`` localisation lines) or "masks"
        (``id,mask_path,ignore_path``).
      localization: False skips ``image_sizes.txt`` and ``localization.txt`` (training splits
        need only the labels).

    The files must agree with each other: every id of ``image_ids.txt`` once, and exactly the
    ids it lists in the other files (once each in ``class_labels.txt`` and ``image_sizes.txt``,
    one or more lines in ``localization.txt``), each box inside its image.

    Raises:
      ValueError naming the file and line for a missing file, an unparsable line, a duplicate
      id, an id that ``image_ids.txt`` does not list, an id of ``image_ids.txt`` without
      boxes / masks / image size / label (naming its ``image_ids.txt`` line), or a box that is
      not ``0 <= x0 <= x1 <= width, 0 <= y0 <= y1 <= height`` (original pixels; ``x1 = width``,
      the exclusive edge some annotations use, passes).
    """
    if kind not in ("boxes", "masks"):
        raise ValueError(f"kind must be 'boxes' or 'masks', got {kind!r}")
    path = {name: os.path.join(directory, name) for name in _FILES}
    ids_file = path["image_ids.txt"]
    id_lines = _read_image_ids(ids_file)
    ids = _Ids(id_lines, ids_file)
    class_labels = None
    if os.path.isfile(path["class_labels.txt"]):
        class_labels = _read_class_labels(path["class_labels.txt"], ids)
    sizes, boxes, mask_paths, ignore_paths = {}, {}, {}, {}
    loc = path["localization.txt"]
    if not localization:
        pass
    elif kind == "boxes":
        sizes, boxes = _read_boxes(path["image_sizes.txt"], loc, ids)
    else:
        mask_paths, ignore_paths = _read_masks(loc, ids)
    return Metadata(directory, kind, tuple(id_lines), class_labels, sizes, boxes, mask_paths,
                    ignore_paths, id_lines)


def _read_image_ids(ids_file: str) -> dict:
    """id -> line number, in file order; raises on a duplicate id or an empty list."""
    if not os.path.isfile(ids_file):
        raise ValueError(f"metadata file not found: {ids_file}")
    id_lines = {}
    with open(ids_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            image_id = line.rstrip("\r\n")
            if not image_id.strip():
                continue
            if image_id in id_lines:
                raise ValueError(f"{ids_file}:{number}: duplicate image id {image_id!r} "
                                 f"(first on line {id_lines[image_id]})")
            id_lines[image_id] = number
    if not id_lines:
        raise ValueError(f"{ids_file} lists no image ids")
    return id_lines


@dataclasses.dataclass(frozen=True)
class _Ids:
    """The ids of ``image_ids.txt`` (id -> line) that every other file must agree with."""
    lines: dict
    file: str

    def check(self, path: str, number: int, image_id: str, seen: dict | None = None) -> None:
        """Raises at ``path:number`` for an id this split does not list, or one already given
        in ``seen`` (id -> first line; the id is then recorded there)."""
        if image_id not in self.lines:
            raise ValueError(f"{path}:{number}: image id {image_id!r} is not listed in "
                             f"{self.file}")
        if seen is None:
            return
        if image_id in seen:
            raise ValueError(f"{path}:{number}: duplicate image id {image_id!r} (first on "
                             f"line {seen[image_id]})")
        seen[image_id] = number

    def check_all(self, table: dict, file: str, what: str) -> None:
        """Raises naming ``file`` and the ``image_ids.txt`` line of the first id without an
        entry in ``table``."""
        missing = [i for i in self.lines if i not in table]
        if missing:
            raise ValueError(f"{file}: no {what} for {len(missing)} image id(s) of "
                             f"{self.file}, e.g. {missing[0]!r} ({self.file}:"
                             f"{self.lines[missing[0]]})")


def _read_class_labels(p: str, ids: _Ids) -> dict:
    class_labels, seen = {}, {}
    for number, (image_id, label) in _lines(p, 2, "'<image_id>,<class_label>'"):
        ids.check(p, number, image_id, seen)
        (value,) = _ints(p, number, [label], "the class label")
        if value < 0:
            raise ValueError(f"{p}:{number}: class labels must be >= 0, got {value}")
        class_labels[image_id] = value
    ids.check_all(class_labels, p, "class label")
    return class_labels


def _read_sizes(p: str, ids: _Ids) -> tuple:
    """(id -> (width, height), id -> its line)."""
    sizes, seen = {}, {}
    for number, (image_id, *wh) in _lines(p, 3, "'<image_id>,<width>,<height>'"):
        ids.check(p, number, image_id, seen)
        w, h = _ints(p, number, wh, "the image size")
        if w <= 0 or h <= 0:
            raise ValueError(f"{p}:{number}: image size must be positive, got {w}x{h}")
        sizes[image_id] = (w, h)
    ids.check_all(sizes, p, "image size")
    return sizes, seen


def _read_boxes(p: str, loc: str, ids: _Ids) -> tuple:
    """(id -> (width, height), id -> list of boxes) of a box dataset."""
    (sizes, size_lines), boxes = _read_sizes(p, ids), {}
    for number, (image_id, *xy) in _lines(loc, 5, "'<image_id>,<x0>,<y0>,<x1>,<y1>'"):
        ids.check(loc, number, image_id)
        box = _ints(loc, number, xy, "the box")
        x0, y0, x1, y1 = box
        if min(box) < 0 or x1 < x0 or y1 < y0:
            raise ValueError(f"{loc}:{number}: a box must satisfy 0 <= x0 <= x1 and "
                             f"0 <= y0 <= y1, got {box}")
        w, h = sizes[image_id]
        if x1 > w or y1 > h:
            raise ValueError(f"{loc}:{number}: box {box} lies outside its {w}x{h} image "
                             f"({p}:{size_lines[image_id]})")
        boxes.setdefault(image_id, []).append(box)
    ids.check_all(boxes, loc, "box")
    return sizes, boxes


def _read_masks(loc: str, ids: _Ids) -> tuple:
    """(id -> list of instance mask paths, id -> ignore mask path) of a mask dataset."""
    mask_paths, ignore_paths = {}, {}
    for number, (image_id, mask, ignore) in _lines(
            loc, 3, "'<image_id>,<mask_path>,<ignore_path>'"):
        ids.check(loc, number, image_id)
        if not mask:
            raise ValueError(f"{loc}:{number}: empty mask path")
        if image_id not in mask_paths:
            mask_paths[image_id] = []
            ignore_paths[image_id] = ignore
        elif ignore:
            raise ValueError(f"{loc}:{number}: only the first line of an image may name its "
                             f"ignore mask ({image_id!r} already has "
                             f"{ignore_paths[image_id]!r})")
        mask_paths[image_id].append(mask)
    ids.check_all(mask_paths, loc, "mask")
    return mask_paths, ignore_paths


class WsolMetadataSource:
    """Random-access records of one split (``len(src)``, ``src[i]``, ``src.labels``).

    Args:
      image_root: folder the image ids are relative to.
      metadata_dir: ``<metadata_root>/<split>``.
      mask_root: folder the mask paths are relative to (mask datasets).
      localization: read boxes / masks (False for training splits).
      mask_size: > 0: records of a mask dataset also carry the protocol's pixel ground truth
        at ``[mask_size, mask_size]`` (:func:`infocam_jax.data.masks.load_mask`: instance
        masks resized nearest-neighbour and united, ``mask``; the ignore region minus the
        foreground, ``ignore``), for PxAP of score maps at that size (``has_masks``).
    """

    def __init__(self, image_root: str, metadata_dir: str, mask_root: str = "",
                 localization: bool = True, mask_size: int = 0):
        kind = metadata_kind(metadata_dir)
        self.metadata = read_metadata(metadata_dir, kind, localization=localization)
        if self.metadata.class_labels is None:
            raise ValueError(f"{os.path.join(metadata_dir, 'class_labels.txt')} is needed to "
                             f"train or evaluate on this split")
        self.image_root = image_root
        self.mask_root = mask_root
        self.localization = localization
        self.mask_size = int(mask_size)
        self.has_masks = bool(localization and self.metadata.kind == "masks" and mask_size > 0)
        self.labels = np.asarray([self.metadata.class_labels[i]
                                  for i in self.metadata.image_ids], np.int64)

    def __len__(self) -> int:
        return len(self.metadata.image_ids)

    def _boxes(self, image_id: str) -> np.ndarray:
        md = self.metadata
        if not self.localization:
            return np.zeros((0, 4), np.float32)
        if md.kind == "boxes":
            return np.asarray(md.boxes[image_id], np.float32).reshape(-1, 4)
        out = []
        for p in md.mask_paths[image_id]:
            path = os.path.join(self.mask_root, p)
            try:
                with Image.open(path) as im:
                    mask = np.asarray(im.convert("L")) > 0
            except Exception as e:  # PIL raises several types for a corrupt file
                raise ValueError(f"mask {path} could not be read: {e}") from None
            ys, xs = np.nonzero(mask)
            if xs.size:
                out.append([xs.min(), ys.min(), xs.max(), ys.max()])
        return np.asarray(out, np.float32).reshape(-1, 4)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images of "
                             f"{self.metadata.directory}")
        image_id = self.metadata.image_ids[i]
        path = os.path.join(self.image_root, image_id)
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"), np.uint8)
        except FileNotFoundError:
            raise ValueError(f"image {path} (id {image_id!r} of "
                             f"{self.metadata.directory}) not found") from None
        except Exception as e:  # PIL raises several types for a corrupt file
            raise ValueError(f"image {path} could not be read: {e}") from None
        boxes = self._boxes(image_id)
        label = int(self.labels[i])
        out = {"image": image, "label": label, "boxes": boxes,
               "box_labels": np.full((boxes.shape[0],), label, np.int32),
               "image_id": image_id}
        if self.has_masks:
            out["mask"], out["ignore"] = load_mask(
                self.mask_root, self.metadata.mask_paths[image_id],
                self.metadata.ignore_paths[image_id], self.mask_size)
        return out


def open_sources(image_root: str, metadata_root: str, mask_root: str = "",
                 splits: dict | None = None, mask_size: int = 0) -> dict:
    """``{our split: WsolMetadataSource}``, opened lazily on first access (a dict subclass);
    ``mask_size`` as in :class:`WsolMetadataSource` (evaluation splits only)."""
    mapping = dict(SPLITS if splits is None else splits)

    class _Lazy(dict):
        def __missing__(self, split):
            if split not in mapping:
                raise ValueError(f"split must be one of {tuple(mapping)}; got {split!r}")
            src = WsolMetadataSource(image_root, os.path.join(metadata_root, mapping[split]),
                                     mask_root, localization=split != "train",
                                     mask_size=mask_size)
            self[split] = src
            return src

    return _Lazy()
