"""Saved score maps in the layout of the reference WSOL evaluation (clovaai/wsolevaluation).

Inputs, as the reference reads them:

* ``<metadata_root>/<dataset_name>/<split>/`` holds ``image_ids.txt`` (one id per line),
  ``class_labels.txt`` (``id,label``), ``image_sizes.txt`` (``id,width,height``) and
  ``localization.txt``: ``id,x0,y0,x1,y1`` lines for box datasets (several lines for several
  boxes) or ``id,mask_path,ignore_path`` lines for mask datasets (several lines for several
  instance masks; the ignore path on the image's first line). ``OpenImages`` is the mask
  dataset; any other name is read as a box dataset.
* ``<scoremap_root>/<image_id>.npy``: a 2-D float map in [0, 1] per image (``<id>.npy`` with the
  id's extension kept, as the reference's loader builds the name; ``<id without extension>.npy``
  is accepted too). All maps share one shape (224x224 for masks).
* masks under ``<mask_root>/<dataset_name>/<mask_path>``.

Semantics (equal to the reference's ``evaluation.py``):

* GT boxes are rescaled to 224x224 as ``int(float(x) * 224 / width)`` (truncation) and scored
  with the inclusive IoU of :mod:`infocam_jax.boxes`; maps are quantised as
  ``uint8(float64(s) * 255)`` on the host (the reference upcasts every map to float64 first).
* ``thresholds = np.arange(0, 1, cam_curve_interval)``; MaxBoxAcc(δ) = max over thresholds of
  ``100 * correct / N`` with ``IoU >= δ / 100``; ``performance`` is MaxBoxAcc at δ = 50, or the
  mean over δ with ``multi_iou_eval``.
* PxAP (:mod:`infocam_jax.evaluation.masks`): instance masks resized to 224x224 like
  ``cv2.resize(INTER_NEAREST)``, foreground where > 0.5, united; ignored pixels are the ignore
  mask minus the foreground.

The evaluation is batched: maps and masks are read and checked by a thread pool, box IoUs at
every threshold come from one jitted call per batch, and counts are summed on the device.
"""
from __future__ import annotations

import concurrent.futures
import functools
import inspect
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from infocam_jax import boxes as boxes_lib
from infocam_jax.data.wsol_metadata import Metadata, read_metadata
from infocam_jax.evaluation import masks as masks_lib

__all__ = [
    "MASK_DATASETS",
    "RESIZE_LENGTH",
    "Metadata",
    "evaluate_scoremaps",
    "export_model_scoremaps",
    "format_table",
    "gt_boxes",
    "load_mask",
    "load_scoremap",
    "read_metadata",
    "resize_boxes",
    "save_scoremaps",
    "scoremap_path",
    "write_metadata",
    "write_report",
]

RESIZE_LENGTH = 224
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
# Score maps and masks
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


# --------------------------------------------------------------------------------------------
# Batched evaluation
# --------------------------------------------------------------------------------------------
def _protocol_scoremap(m: np.ndarray) -> np.ndarray:
    """float32 map whose float32 quantisation ``uint8(255 * s)`` equals the reference's float64
    one: each uint8 level q is re-encoded at the centre of its bin, ``(q + 0.5) / 255``."""
    q = (m.astype(np.float64) * 255).astype(np.uint8)
    return np.where(q == 255, np.float32(1), (q.astype(np.float32) + 0.5) / 255).astype(
        np.float32)


@functools.cache
def _backend_kwargs() -> dict:
    # The compiled box kernel (backend="auto") is used when boxes offers it.
    params = inspect.signature(boxes_lib.max_contour_iou).parameters
    return {"backend": "auto"} if "backend" in params else {}


@functools.partial(jax.jit, static_argnames=("iou_thresholds",))
def _add_box_hits(total, per_class, best_iou, labels, valid, iou_thresholds):
    """total int32 [I, T] and per_class [C, I, T] += hits of best_iou [B, T] >= δ_i."""
    delta = jnp.asarray(iou_thresholds, jnp.float32)[None, :, None]
    hit = (best_iou[:, None, :] >= delta) & valid[:, None, None]               # [B, I, T]
    hit = hit.astype(jnp.int32)
    return (total + jnp.sum(hit, axis=0),
            per_class + jax.ops.segment_sum(hit, labels, num_segments=per_class.shape[0]))


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.start = total, enabled, time.perf_counter()
        self.last = -1.0

    def __call__(self, done: int):
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.total and now - self.last < 0.5:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        end = "\n" if done >= self.total else ""
        sys.stderr.write(f"\r  evaluating score maps: {done}/{self.total} images "
                         f"({rate:.1f}/s){end}")
        sys.stderr.flush()


def _batches(n: int, batch_size: int):
    return [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _pad(arrays: list, batch: int) -> np.ndarray:
    stacked = np.stack(arrays)
    if stacked.shape[0] == batch:
        return stacked
    pad = np.zeros((batch - stacked.shape[0],) + stacked.shape[1:], stacked.dtype)
    return np.concatenate([stacked, pad])


def evaluate_scoremaps(scoremap_root: str, metadata_root: str, dataset_name: str, split: str,
                       mask_root: str = "", cam_curve_interval: float = 0.01,
                       multi_contour_eval: bool = False, multi_iou_eval: bool = False,
                       iou_threshold_list=(30, 50, 70), batch_size: int = 64,
                       num_threads: int | None = None, progress: bool = True) -> dict:
    """Evaluates a tree of saved maps exactly as the reference ``evaluate_wsol`` does.

    Args:
      scoremap_root, metadata_root, mask_root, dataset_name, split, cam_curve_interval,
        multi_contour_eval, multi_iou_eval, iou_threshold_list: the reference's arguments
        (IoU thresholds in percent).
      batch_size: maps per jitted call.
      num_threads: reader threads (default: CPU count, at most 16).
      progress: print a progress line on stderr.

    Returns:
      The report (percentages): ``performance``, ``metric``, ``num_images``, settings, and for
      box datasets ``max_box_acc`` / ``best_threshold`` per IoU threshold (keys "30", ...),
      ``per_class_max_box_acc`` (per IoU threshold, per class, at that IoU's best threshold) and
      ``per_class_num_images`` when ``class_labels.txt`` exists; ``pxap`` for mask datasets.

    Raises:
      ValueError naming the offending file for bad metadata, maps or masks.
    """
    interval = float(cam_curve_interval)
    if not 0 < interval <= 1:
        raise ValueError(f"cam_curve_interval must lie in (0, 1], got {cam_curve_interval}")
    ious = tuple(int(v) for v in iou_threshold_list)
    if not ious or min(ious) < 0 or max(ious) > 100:
        raise ValueError(f"iou_threshold_list must hold percentages in [0, 100], got {ious}")
    kind = "masks" if dataset_name in MASK_DATASETS else "boxes"
    if kind == "boxes" and not multi_iou_eval and 50 not in ious:
        raise ValueError(f"without multi_iou_eval the performance is MaxBoxAcc at IoU 50, but "
                         f"iou_threshold_list is {list(ious)}")
    metadata = read_metadata(os.path.join(metadata_root, dataset_name, split), kind)
    thresholds = np.arange(0, 1, interval)
    ids = metadata.image_ids
    n = len(ids)
    batch = max(1, min(int(batch_size), n))
    threads = int(num_threads or min(os.cpu_count() or 1, 16))
    paths = [scoremap_path(scoremap_root, i) for i in ids]
    first_shape = load_scoremap(paths[0]).shape
    if kind == "masks" and first_shape != (RESIZE_LENGTH, RESIZE_LENGTH):
        raise ValueError(f"score map {paths[0]} has shape {first_shape}; mask datasets need "
                         f"{RESIZE_LENGTH}x{RESIZE_LENGTH} maps")
    mask_dir = os.path.join(mask_root, dataset_name)

    def read(index: int):
        m = load_scoremap(paths[index], first_shape)
        if kind == "boxes":
            return _protocol_scoremap(m)
        fg, ignore = load_mask(mask_dir, metadata.mask_paths[ids[index]],
                               metadata.ignore_paths[ids[index]])
        return masks_lib.host_score_bins(m, thresholds), fg, ignore

    labels = np.zeros(n, np.int32)
    if metadata.class_labels is not None:
        labels = np.asarray([metadata.class_labels[i] for i in ids], np.int32)
    num_classes = int(labels.max()) + 1
    if kind == "boxes":
        gt, gt_valid = gt_boxes(metadata)
        total = jnp.zeros((len(ious), thresholds.size), jnp.int32)
        per_class = jnp.zeros((num_classes, len(ious), thresholds.size), jnp.int32)
        deltas = tuple(v / 100 for v in ious)
    else:
        positive = np.zeros(thresholds.size + 2, np.int64)
        negative = np.zeros(thresholds.size + 2, np.int64)

    report_progress = _Progress(n, progress)
    done = 0
    chunks = _batches(n, batch)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        # Reads run two batches ahead of the jitted evaluation.
        pending = [pool.map(read, r) for r in chunks[:2]]
        for k, rows in enumerate(chunks):
            items = list(pending.pop(0))
            pending += [pool.map(read, r) for r in chunks[k + 2:k + 3]]
            valid = np.arange(batch) < len(rows)
            if kind == "boxes":
                idx = np.asarray(rows)
                best = boxes_lib.max_contour_iou(
                    _pad(items, batch), thresholds, _pad(list(gt[idx]), batch),
                    _pad(list(gt_valid[idx]), batch), multi_contour=bool(multi_contour_eval),
                    **_backend_kwargs())
                total, per_class = _add_box_hits(total, per_class, jnp.asarray(best),
                                                 _pad(list(labels[idx]), batch), valid, deltas)
            else:
                bins, fg, ignore = (_pad(list(x), batch) for x in zip(*items))
                counts = masks_lib.pixel_counts_from_bins(bins, fg, ignore, thresholds, valid)
                positive += np.asarray(counts.positive, np.int64)
                negative += np.asarray(counts.negative, np.int64)
            done += len(rows)
            report_progress(done)

    report = {
        "dataset_name": dataset_name, "split": split, "num_images": n,
        "cam_curve_interval": interval, "num_thresholds": int(thresholds.size),
        "scoremap_shape": list(first_shape),
    }
    if kind == "masks":
        ap = masks_lib.average_precision(positive, negative) * 100
        report.update(metric="PxAP", performance=float(np.average([ap])), pxap=ap)
        return report
    correct = np.asarray(total, np.int64)
    accuracy = correct * 100. / float(n)                                   # [I, T]
    max_acc = [float(a.max()) for a in accuracy]
    best = [int(a.argmax()) for a in accuracy]
    performance = np.average(max_acc) if multi_iou_eval else max_acc[ious.index(50)]
    v2 = multi_contour_eval and multi_iou_eval
    report.update(
        metric="MaxBoxAccV2" if v2 else "MaxBoxAcc",
        multi_contour_eval=bool(multi_contour_eval), multi_iou_eval=bool(multi_iou_eval),
        iou_threshold_list=list(ious), performance=float(performance),
        max_box_acc={str(d): a for d, a in zip(ious, max_acc)},
        best_threshold={str(d): float(thresholds[b]) for d, b in zip(ious, best)},
    )
    if metadata.class_labels is not None:
        per = np.asarray(per_class, np.int64)
        count = np.bincount(labels, minlength=num_classes)
        present = np.flatnonzero(count)
        report["per_class_num_images"] = {str(c): int(count[c]) for c in present}
        report["per_class_max_box_acc"] = {
            str(d): {str(c): float(per[c, i, best[i]] * 100. / count[c]) for c in present}
            for i, d in enumerate(ious)}
    return report


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def format_table(report: dict) -> str:
    """A short plain-text table of a report from :func:`evaluate_scoremaps`."""
    head = (f"{report['dataset_name']}/{report['split']}: {report['num_images']} images, "
            f"{report['num_thresholds']} thresholds (interval {report['cam_curve_interval']})")
    if report["metric"] == "PxAP":
        return f"{head}\n  PxAP  {report['pxap']:.4f}\n"
    settings = (f"multi_contour_eval={report['multi_contour_eval']}, "
                f"multi_iou_eval={report['multi_iou_eval']}")
    rows = [head, f"  {settings}", "  IoU  MaxBoxAcc  best threshold"]
    for d, acc in report["max_box_acc"].items():
        rows.append(f"  {d:>3}  {acc:9.4f}  {report['best_threshold'][d]:.4f}")
    per = report.get("per_class_max_box_acc", {}).get("50")
    if per:
        values = np.asarray(list(per.values()))
        rows.append(f"  per class at IoU 50 ({values.size} classes): min {values.min():.2f}, "
                    f"median {np.median(values):.2f}, max {values.max():.2f}")
    rows.append(f"  performance ({report['metric']}): {report['performance']:.4f}")
    return "\n".join(rows) + "\n"


def write_report(report: dict, path: str) -> None:
    """Writes the report as JSON (creating the folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


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
    import itertools  # pylint: disable=import-outside-toplevel

    from infocam_jax.evaluation import forward
    from infocam_jax.evaluation import settings as settings_lib

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
