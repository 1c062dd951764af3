"""Writing score maps and ground truth in the layout of the reference WSOL evaluation
(the layout :mod:`infocam_jax.evaluation.scoremaps.read` reads), e.g. a model's maps for
``launch/evaluate.py --save_scoremaps``.
"""
from __future__ import annotations

import itertools
import os

import jax
import numpy as np

from infocam_jax.data.masks import RESIZE_LENGTH
from infocam_jax.evaluation import forward
from infocam_jax.evaluation import settings as settings_lib
from infocam_jax.evaluation.scoremaps.read import MASK_DATASETS

__all__ = ["export_model_scoremaps", "save_scoremaps", "write_metadata"]


def save_scoremaps(scoremap_root: str, image_ids, scoremaps) -> list:
    """Saves maps in the reference layout: ``<root>/<image_id>.npy`` (float32, 2-D, [0, 1]).

    Args:
      scoremap_root: output folder.
      image_ids: ``N`` ids (may contain ``/``: sub-folders are created).
      scoremaps: float ``[N, H, W]`` in [0, 1].

    Returns:
      The written paths.
    """
    maps = np.asarray(scoremaps)
    ids = list(image_ids)
    if maps.ndim != 3 or maps.shape[0] != len(ids):
        raise ValueError(f"scoremaps must have shape [N, H, W] with N = {len(ids)} ids, got "
                         f"{maps.shape}")
    if maps.size and not (np.all(maps >= 0) and np.all(maps <= 1)):
        raise ValueError("scoremaps must lie in [0, 1] (see boxes.scoremaps)")
    written = []
    for image_id, m in zip(ids, maps):
        path = os.path.join(scoremap_root, image_id + ".npy")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, m.astype(np.float32))
        written.append(path)
    return written


def write_metadata(directory: str, image_ids, class_labels, image_sizes=None, boxes=None,
                   masks=None) -> None:
    """Writes a split's metadata files in the reference formats.

    Args:
      directory: ``<metadata_root>/<dataset_name>/<split>`` (created).
      image_ids: ``N`` ids.
      class_labels: ``N`` ints.
      image_sizes: ``N`` (width, height) pairs (box datasets; boxes in those pixels).
      boxes: ``N`` lists of (x0, y0, x1, y1), or an int ``[N, G, 4]`` array with -1 rows or a
        ``(array, valid [N, G])`` pair for padding.
      masks: ``N`` (list of mask paths, ignore path) pairs (mask datasets).
    """
    ids = list(image_ids)
    if (boxes is None) == (masks is None):
        raise ValueError("give exactly one of boxes and masks")
    os.makedirs(directory, exist_ok=True)
    labels = [int(v) for v in class_labels]

    def write(name, rows):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.writelines(",".join(str(x) for x in row) + "\n" for row in rows)

    write("image_ids.txt", [[i] for i in ids])
    write("class_labels.txt", list(zip(ids, labels)))
    if boxes is not None:
        if isinstance(boxes, tuple) and len(boxes) == 2:
            arr, valid = np.asarray(boxes[0]), np.asarray(boxes[1], bool)
            boxes = [[tuple(int(v) for v in b) for b, ok in zip(bs, vs) if ok]
                     for bs, vs in zip(arr, valid)]
        write("image_sizes.txt", [(i, int(w), int(h)) for i, (w, h) in zip(ids, image_sizes)])
        write("localization.txt", [(i, *map(int, b)) for i, bs in zip(ids, boxes) for b in bs])
    else:
        write("image_sizes.txt", [])
        rows = []
        for i, (paths, ignore) in zip(ids, masks):
            rows += [(i, p, ignore if k == 0 else "") for k, p in enumerate(paths)]
        write("localization.txt", rows)


def export_model_scoremaps(config, model, variables, iterator, out_dir: str, *,
                           split: str = "test", dataset_name: str | None = None,
                           max_batches: int | None = None) -> dict:
    """Writes a model's score maps and ground truth in the reference layout (``--save_scoremaps``).

    For every valid example, in iterator order, the ground-truth class's map of each kind in
    the config's evaluation settings (upsampled and normalised as the library's evaluation
    does) goes to ``<out_dir>/scoremaps/<kind>/<split>/<index>.png.npy``; the ground truth goes to
    ``<out_dir>/metadata/<dataset_name>/<split>/`` with image sizes written as 224x224 so the
    reference keeps the boxes' pixel values (boxes are those of the evaluated, resized image).
    Either tool then evaluates them, e.g. ``launch/evaluate_scoremaps.py
    --scoremap_root=<out_dir>/scoremaps/cam --metadata_root=<out_dir>/metadata
    --dataset_name=<dataset_name> --split=<split>``. Examples whose boxes were all cropped away
    are skipped (the reference needs a box per image).

    Args:
      config: ml_collections config (single-label).
      model, variables: the Flax module and its variables.
      iterator: eval batches (docs/interfaces.md), e.g. ``data.make_iterator(training=False)``.
      out_dir: output folder.
      split: split name used in paths and metadata.
      dataset_name: metadata folder name (default ``config.dataset``; never "OpenImages").
      max_batches: stop after this many batches.

    Returns:
      ``{"scoremap_roots": {kind: path}, "metadata_root": path, "dataset_name": str,
      "num_images": int, "num_skipped": int}``.
    """
    reading = settings_lib.EvalSettings.from_config(config)
    if reading.multi_label:
        raise ValueError("export_model_scoremaps supports single-label configs only")
    name = dataset_name or str(config.dataset)
    if name in MASK_DATASETS:
        raise ValueError(f"dataset_name {name!r} would be read as a mask dataset")
    predict = jax.jit(lambda v, x, y: forward.predict_maps(reading, model, v, x, y)["scoremaps"])
    roots = {k: os.path.join(out_dir, "scoremaps", k) for k in reading.map_kinds}
    ids, labels, gt = [], [], []
    skipped = 0
    for batch in itertools.islice(iterator, max_batches):
        valid = np.asarray(batch["valid"], bool)
        maps = jax.device_get(predict(variables, batch["image"], batch["label"]))
        for b in np.flatnonzero(valid):
            keep = np.asarray(batch["box_valid"][b], bool)
            if not keep.any():
                skipped += 1
                continue
            image_id = f"{split}/{len(ids) + skipped:07d}.png"
            for kind, root in roots.items():
                save_scoremaps(root, [image_id], np.clip(maps[kind][b:b + 1], 0, 1))
            ids.append(image_id)
            labels.append(int(batch["label"][b]))
            gt.append([tuple(int(v) for v in box) for box in np.asarray(batch["boxes"][b])[keep]])
    if not ids:
        raise ValueError("no example with a visible ground-truth box to export")
    meta_root = os.path.join(out_dir, "metadata")
    write_metadata(os.path.join(meta_root, name, split), ids, labels,
                   [(RESIZE_LENGTH, RESIZE_LENGTH)] * len(ids), boxes=gt)
    return {"scoremap_roots": roots, "metadata_root": meta_root, "dataset_name": name,
            "num_images": len(ids), "num_skipped": skipped}
