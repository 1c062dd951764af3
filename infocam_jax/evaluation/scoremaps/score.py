"""The reference WSOL evaluation (clovaai/wsolevaluation) of saved score maps, batched.

Inputs (metadata, ``.npy`` maps, masks) are read and checked by
:mod:`infocam_jax.evaluation.scoremaps.read`. Semantics (equal to the reference's
``evaluation.py``):

* GT boxes rescaled to 224x224 by truncation and scored with the inclusive IoU of
  :mod:`infocam_jax.boxes`; maps are quantised as ``uint8(float64(s) * 255)`` on the host (the
  reference upcasts every map to float64 first).
* ``thresholds = np.arange(0, 1, cam_curve_interval)``; MaxBoxAcc(δ) = max over thresholds of
  ``100 * correct / N`` with ``IoU >= δ / 100``; ``performance`` is MaxBoxAcc at δ = 50, or the
  mean over δ with ``multi_iou_eval``.
* PxAP (:mod:`infocam_jax.metrics.pxap`) from the united instance masks and the ignore mask.

How it runs (a whole split streams through a fixed amount of memory):

1. :func:`_plan`: the arguments are checked, the metadata is parsed and cross-checked once
   (:func:`~infocam_jax.data.wsol_metadata.read_metadata`), and the pre-pass reads the ``.npy``
   header of every map (:func:`~infocam_jax.evaluation.scoremaps.read.check_scoremap_files`):
   a missing, truncated or misshapen map (or a missing mask file) fails here, before any heavy
   work, naming the file and its ``image_ids.txt`` line. The maps' shape fixes the one batch
   shape that is compiled (the last batch is padded).
2. :class:`_Prefetch`: a thread pool reads, checks and quantises the maps (and masks) of the
   next ``ahead`` batches while the current one is evaluated; only those batches are held.
3. Box datasets with the compiled kernel (engine ``"host"``, the default when it loads): the
   uint8 maps of each batch go straight to its C entry points (:mod:`infocam_jax.native.host`)
   and NumPy sums the hits at every threshold (:func:`_host_box_step`); JAX is never imported,
   so start-up is NumPy's. Otherwise (engine ``"jax"``, and mask datasets) JAX is imported only
   now, while the readers already work, and one jitted step per batch
   (:mod:`infocam_jax.evaluation.scoremaps.jax_engine`: the box step, the PxAP histograms) sums
   the counts on the device. Either way the memory does not grow with the split.
4. :func:`_box_report` / :func:`_mask_report` turn the counts into the reference's numbers.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import sys
import time

import numpy as np

from infocam_jax.data.masks import RESIZE_LENGTH, load_mask
from infocam_jax.data.wsol_metadata import Metadata, read_metadata
from infocam_jax.evaluation.scoremaps.read import (MASK_DATASETS, check_mask_files,
                                                   check_scoremap_files, gt_boxes,
                                                   load_scoremap, scoremap_path)
from infocam_jax.native import host, protocol

__all__ = ["evaluate_scoremaps", "format_table", "write_report"]


def seconds_since_process_start() -> float:
    """Wall seconds since this process started (Linux ``/proc``; elsewhere since this module
    was imported): the clock of the report's ``timings_s``."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def _protocol_quantise(m: np.ndarray) -> np.ndarray:
    """The reference's ``uint8(float64(s) * 255)``: uint8, same shape (exact: a float32 times
    255 is exact in float64)."""
    return np.multiply(m, 255.0, dtype=np.float64).astype(np.uint8)


def _protocol_scoremap(m: np.ndarray) -> np.ndarray:
    """float32 map whose float32 quantisation ``uint8(255 * s)`` equals the reference's float64
    one: each uint8 level q is re-encoded at the centre of its bin, ``(q + 0.5) / 255``."""
    q = _protocol_quantise(m)
    return np.where(q == 255, np.float32(1), (q.astype(np.float32) + 0.5) / 255).astype(
        np.float32)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything fixed before the first batch: settings, metadata, paths, batch shape."""
    kind: str                 # "boxes" or "masks"
    interval: float
    thresholds: np.ndarray    # float64 [T]
    ious: tuple               # IoU thresholds in percent
    multi_contour: bool
    multi_iou: bool
    metadata: Metadata
    paths: tuple              # one .npy path per image id
    labels: np.ndarray        # int32 [N] class labels (0 without class_labels.txt)
    shape: tuple              # (H, W) of every map
    batch: int
    mask_dir: str
    first_read_s: float       # seconds since process start when every header was checked


def _plan(scoremap_root, metadata_root, dataset_name, split, mask_root, cam_curve_interval,
          multi_contour_eval, multi_iou_eval, iou_threshold_list, batch_size) -> _Plan:
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
    ids = metadata.image_ids
    paths = tuple(scoremap_path(scoremap_root, i) for i in ids)
    ids_file = os.path.join(metadata.directory, "image_ids.txt")
    shape = check_scoremap_files(paths, (f" (id {i!r}, {ids_file}:{metadata.id_lines[i]})"
                                         for i in ids))
    first_read_s = seconds_since_process_start()
    if kind == "masks" and shape != (RESIZE_LENGTH, RESIZE_LENGTH):
        raise ValueError(f"score map {paths[0]} has shape {shape}; mask datasets need "
                         f"{RESIZE_LENGTH}x{RESIZE_LENGTH} maps")
    if kind == "masks":
        check_mask_files(os.path.join(mask_root, dataset_name), metadata)
    labels = np.zeros(len(ids), np.int32)
    if metadata.class_labels is not None:
        labels = np.asarray([metadata.class_labels[i] for i in ids], np.int32)
    return _Plan(kind=kind, interval=interval, thresholds=np.arange(0, 1, interval), ious=ious,
                 multi_contour=bool(multi_contour_eval), multi_iou=bool(multi_iou_eval),
                 metadata=metadata, paths=paths, labels=labels, shape=shape,
                 batch=max(1, min(int(batch_size), len(ids))),
                 mask_dir=os.path.join(mask_root, dataset_name), first_read_s=first_read_s)


def _jax_engine():
    """:mod:`~infocam_jax.evaluation.scoremaps.jax_engine`, imported here and only here: the host
    engine starts without JAX, so this module's one function-local import is made once the JAX
    engine (or a mask dataset) is chosen."""
    # pylint: disable-next=import-outside-toplevel
    from infocam_jax.evaluation.scoremaps import jax_engine
    return jax_engine


def _reader(plan: _Plan):
    """read(i): image i's uint8 map (boxes), or (int16 score bins, foreground, ignore)."""
    if plan.kind == "boxes":
        return lambda i: _protocol_quantise(load_scoremap(plan.paths[i], plan.shape))
    engine = _jax_engine()
    ids = plan.metadata.image_ids

    def read(i):
        m = load_scoremap(plan.paths[i], plan.shape)
        fg, ignore = load_mask(plan.mask_dir, plan.metadata.mask_paths[ids[i]],
                               plan.metadata.ignore_paths[ids[i]])
        return engine.score_bins(m, plan.thresholds), fg, ignore

    return read


class _Prefetch:
    """Iterates ``(rows, items)`` over the batches, reading ``ahead`` batches in advance on a
    thread pool (NumPy's loads and arithmetic release the GIL). Call :meth:`close` at the end."""

    def __init__(self, read, n: int, batch: int, threads: int, ahead: int = 2):
        self._chunks = [range(s, min(s + batch, n)) for s in range(0, n, batch)]
        self._pool = concurrent.futures.ThreadPoolExecutor(threads)
        self._read = read
        self._pending = [self._submit(c) for c in self._chunks[:ahead + 1]]
        self._ahead = ahead

    def _submit(self, rows):
        return [self._pool.submit(self._read, i) for i in rows]

    def __iter__(self):
        for k, rows in enumerate(self._chunks):
            futures = self._pending.pop(0)
            nxt = k + self._ahead + 1
            if nxt < len(self._chunks):
                self._pending.append(self._submit(self._chunks[nxt]))
            yield rows, [f.result() for f in futures]

    def close(self):
        for futures in self._pending:
            for f in futures:
                f.cancel()
        self._pool.shutdown(wait=True)


def _pad(arrays, batch: int) -> np.ndarray:
    """Stacks ``arrays`` into a fresh ``[batch, ...]`` array, zero rows after the last."""
    first = np.asarray(arrays[0])
    out = np.zeros((batch,) + first.shape, first.dtype)
    out[:len(arrays)] = arrays
    return out


def _host_box_step(multi_contour: bool):
    """The JAX engine's ``box_step`` in NumPy + the compiled kernel's C entry points (no JAX):
    the same signature and the same counts (the same kernel, levels and float32 IoU)."""

    def step(total, per_class, q, table, gt, gt_valid, labels, valid, deltas):
        levels = table[:, q.max(axis=(1, 2))].T                                   # [B, T]
        if multi_contour:
            best = np.take_along_axis(host.contour_iou(q, gt, gt_valid), levels, 1)
        else:
            boxes = np.take_along_axis(host.largest_boxes(q), levels[..., None], 1)
            best = protocol.max_iou_with_gt(boxes, gt, gt_valid, xp=np)
        hit = (best[:, None, :] >= deltas[None, :, None]) & valid[:, None, None]  # [B, I, T]
        np.add.at(per_class, labels[valid], hit[valid])
        return total + hit.sum(axis=0), per_class

    return step


def resolve_engine(engine: str) -> str:
    """``"host"`` (NumPy + the compiled kernel, JAX never imported), ``"jax"`` (one jitted
    step per batch: the native FFI kernel or the pure-JAX pass) or ``"auto"``: host when the
    compiled kernel loads, else jax."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "jax":
        return engine
    if host.library() is not None:
        return "host"
    if engine == "host":
        raise ValueError(f"engine 'host' needs the compiled box kernel, which is unavailable: "
                         f"{host.unavailable_reason()}")
    return "jax"


ENGINES = ("auto", "host", "jax")


def _count_boxes(plan: _Plan, batches, progress, engine: str = "jax") -> tuple:
    """Streams the batches through the step of ``engine``: int64 (total [I, T], per_class
    [C, I, T])."""
    gt, gt_valid = gt_boxes(plan.metadata)
    num_classes = int(plan.labels.max()) + 1
    t = plan.thresholds.size
    table = protocol.level_table(plan.thresholds)
    deltas = np.asarray([v / 100 for v in plan.ious], np.float32)
    if engine == "host":
        total = np.zeros((len(plan.ious), t), np.int64)
        per_class = np.zeros((num_classes, len(plan.ious), t), np.int64)
        step = _host_box_step(plan.multi_contour)
    else:
        jax_engine = _jax_engine()
        total, per_class, table, deltas = jax_engine.box_counts(num_classes, len(plan.ious),
                                                                table, deltas)
        step = jax_engine.box_step(plan.multi_contour)
    done = 0
    for rows, items in batches:
        idx = np.asarray(rows)
        total, per_class = step(total, per_class, _pad(items, plan.batch), table,
                                _pad(gt[idx], plan.batch), _pad(gt_valid[idx], plan.batch),
                                _pad(plan.labels[idx], plan.batch),
                                np.arange(plan.batch) < len(rows), deltas)
        done += len(rows)
        progress(done)
    return np.asarray(total, np.int64), np.asarray(per_class, np.int64)


def _count_pixels(plan: _Plan, batches, progress) -> tuple:
    """Streams the batches into the PxAP histograms: int64 (positive [K], negative [K])."""
    engine = _jax_engine()
    positive = np.zeros(plan.thresholds.size + 2, np.int64)
    negative = np.zeros(plan.thresholds.size + 2, np.int64)
    done = 0
    for rows, items in batches:
        bins, fg, ignore = (_pad(list(x), plan.batch) for x in zip(*items))
        pos, neg = engine.pixel_counts(bins, fg, ignore, plan.thresholds,
                                       np.arange(plan.batch) < len(rows))
        positive += pos
        negative += neg
        done += len(rows)
        progress(done)
    return positive, negative


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


def _base_report(plan: _Plan, dataset_name: str, split: str) -> dict:
    return {"dataset_name": dataset_name, "split": split,
            "num_images": len(plan.metadata.image_ids), "cam_curve_interval": plan.interval,
            "num_thresholds": int(plan.thresholds.size), "scoremap_shape": list(plan.shape),
            "timings_s": {"first_map_read": round(plan.first_read_s, 3)}}


def _mask_report(report: dict, positive, negative) -> dict:
    ap = _jax_engine().pxap_percent(positive, negative)
    report.update(metric="PxAP", performance=float(np.average([ap])), pxap=ap)
    return report


def _box_report(report: dict, plan: _Plan, correct, per_class) -> dict:
    ious, thresholds = plan.ious, plan.thresholds
    accuracy = correct * 100. / float(len(plan.labels))                       # [I, T]
    max_acc = [float(a.max()) for a in accuracy]
    best = [int(a.argmax()) for a in accuracy]
    performance = np.average(max_acc) if plan.multi_iou else max_acc[ious.index(50)]
    v2 = plan.multi_contour and plan.multi_iou
    report.update(
        metric="MaxBoxAccV2" if v2 else "MaxBoxAcc",
        multi_contour_eval=plan.multi_contour, multi_iou_eval=plan.multi_iou,
        iou_threshold_list=list(ious), performance=float(performance),
        max_box_acc={str(d): a for d, a in zip(ious, max_acc)},
        best_threshold={str(d): float(thresholds[b]) for d, b in zip(ious, best)},
    )
    if plan.metadata.class_labels is not None:
        count = np.bincount(plan.labels, minlength=per_class.shape[0])
        present = np.flatnonzero(count)
        report["per_class_num_images"] = {str(c): int(count[c]) for c in present}
        report["per_class_max_box_acc"] = {
            str(d): {str(c): float(per_class[c, i, best[i]] * 100. / count[c]) for c in present}
            for i, d in enumerate(ious)}
    return report


def evaluate_scoremaps(scoremap_root: str, metadata_root: str, dataset_name: str, split: str,
                       mask_root: str = "", cam_curve_interval: float = 0.01,
                       multi_contour_eval: bool = False, multi_iou_eval: bool = False,
                       iou_threshold_list=(30, 50, 70), batch_size: int = 64,
                       num_threads: int | None = None, progress: bool = True,
                       engine: str = "auto") -> dict:
    """Evaluates a tree of saved maps exactly as the reference ``evaluate_wsol`` does.

    Args:
      scoremap_root, metadata_root, mask_root, dataset_name, split, cam_curve_interval,
        multi_contour_eval, multi_iou_eval, iou_threshold_list: the reference's arguments
        (IoU thresholds in percent).
      batch_size: maps per jitted call (memory holds about 4 batches of maps).
      num_threads: reader threads (default: CPU count, at most 16).
      progress: print a progress line on stderr.
      engine: box datasets: ``"host"`` (NumPy + the compiled kernel's C entry points: JAX is
        never imported), ``"jax"`` (jitted steps), ``"auto"`` (host when the kernel loads);
        :func:`resolve_engine`. Both give the same numbers. Mask datasets always use JAX.

    Returns:
      The report (percentages): ``performance``, ``metric``, ``num_images``, settings, and for
      box datasets ``max_box_acc`` / ``best_threshold`` per IoU threshold (keys "30", ...),
      ``per_class_max_box_acc`` (per IoU threshold, per class, at that IoU's best threshold) and
      ``per_class_num_images`` when ``class_labels.txt`` exists; ``pxap`` for mask datasets;
      ``timings_s``: seconds since the process started when the maps were first read
      (``first_map_read``: imports, argument checks, metadata, the header pre-pass over every
      map) and when every map was counted (``counted``).

    Raises:
      ValueError naming the offending file (and line) for bad metadata, maps or masks.
      Inconsistent metadata, missing, truncated or misshapen maps and missing masks are found
      before any map is evaluated (the pre-pass reads only the headers); values (NaN, outside
      [0, 1]) and undecodable masks as they are read.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    plan = _plan(scoremap_root, metadata_root, dataset_name, split, mask_root,
                 cam_curve_interval, multi_contour_eval, multi_iou_eval, iou_threshold_list,
                 batch_size)
    engine = resolve_engine(engine) if plan.kind == "boxes" else "jax"
    threads = int(num_threads or min(os.cpu_count() or 1, 16))
    batches = _Prefetch(_reader(plan), len(plan.paths), plan.batch, threads)
    report_progress = _Progress(len(plan.paths), progress)
    report = _base_report(plan, dataset_name, split)
    try:
        if plan.kind == "masks":
            report = _mask_report(report, *_count_pixels(plan, batches, report_progress))
        else:
            report = _box_report(report, plan,
                                 *_count_boxes(plan, batches, report_progress, engine))
    finally:
        batches.close()
    report["engine"] = engine
    report["timings_s"]["counted"] = round(seconds_since_process_start(), 3)
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
