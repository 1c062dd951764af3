"""The reference WSOL evaluation (clovaai/wsolevaluation) of saved score maps, batched.

Inputs (metadata, ``.npy`` maps, masks) are read and checked by
:mod:`infocam_jax.evaluation.scoremap_io`. Semantics (equal to the reference's
``evaluation.py``):

* GT boxes rescaled to 224x224 by truncation and scored with the inclusive IoU of
  :mod:`infocam_jax.boxes`; maps are quantised as ``uint8(float64(s) * 255)`` on the host (the
  reference upcasts every map to float64 first).
* ``thresholds = np.arange(0, 1, cam_curve_interval)``; MaxBoxAcc(δ) = max over thresholds of
  ``100 * correct / N`` with ``IoU >= δ / 100``; ``performance`` is MaxBoxAcc at δ = 50, or the
  mean over δ with ``multi_iou_eval``.
* PxAP (:mod:`infocam_jax.evaluation.masks`) from the united instance masks and the ignore mask.

Maps and masks are read and checked by a thread pool, box IoUs at every threshold come from one
jitted call per batch, and counts are summed on the device.
"""
from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import boxes as boxes_lib
from infocam_jax.evaluation import masks as masks_lib
from infocam_jax.evaluation.scoremap_io import (MASK_DATASETS, RESIZE_LENGTH, gt_boxes,
                                                load_mask, load_scoremap, read_metadata,
                                                scoremap_path)

__all__ = ["evaluate_scoremaps", "format_table", "write_report"]


def _protocol_scoremap(m: np.ndarray) -> np.ndarray:
    """float32 map whose float32 quantisation ``uint8(255 * s)`` equals the reference's float64
    one: each uint8 level q is re-encoded at the centre of its bin, ``(q + 0.5) / 255``."""
    q = (m.astype(np.float64) * 255).astype(np.uint8)
    return np.where(q == 255, np.float32(1), (q.astype(np.float32) + 0.5) / 255).astype(
        np.float32)



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
                    backend="auto")
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
