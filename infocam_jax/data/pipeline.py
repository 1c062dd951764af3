"""Input pipeline shared by every dataset: records -> box-aware transforms -> padded batches.

Reading stack (chosen deliberately):

* **Storage**: tfds builders writing ``array_record``, read back with
  ``builder.as_data_source(split)``: random access, no TensorFlow, each record decoded with PIL.
* **Order**: computed here in NumPy, not by grain's samplers, so that it is an explicit, documented
  pure function: training order = ``default_rng([seed, epoch]).permutation(N)`` truncated to a
  multiple of ``batch_size * process_count``, then process ``p`` takes every ``process_count``-th
  element starting at ``p`` (disjoint shards, all of the same length, so every host runs the same
  number of steps and a resumed run sees the same order). Evaluation order is the stored order,
  sharded the same way and padded with ``valid=False`` examples so that each process yields the
  same number of full batches and every image is counted exactly once.
* **Execution**: ``grain.MapDataset.source(batches_of_indices).map(load_batch)
  .to_iter_dataset(ReadOptions)``: each element is a whole batch (one batched array_record
  read, per-example decode + transforms + normalisation, one stack), so grain's per-element
  overhead is paid once per batch; the thread pool assembles batches ahead of the consumer (PIL
  releases the GIL while decoding/resizing, NumPy while normalising) and keeps the output order
  deterministic.
  ``config.data_threads`` (default 2) sets the pool size.
* **Worker processes** (``config.data_workers`` > 0): threads stop scaling where Python holds
  the GIL (record parsing, box maths, NumPy glue between PIL calls), so grain's
  ``mp_prefetch`` runs the same batch function in that many processes, each on every
  ``data_workers``-th batch with its own ``data_threads`` pool; grain interleaves their
  outputs back into the same order, so batches are identical to the threaded path's. The
  dataset is pickled into each worker (started per iterator, i.e. once per epoch: a few
  seconds each); scripts need a ``__main__`` guard. grain reads its own absl flags, so an
  unparsed ``absl.flags.FLAGS`` (a notebook, a test) is marked parsed with its defaults.
* **Augmentation randomness**: example ``i`` of epoch ``e`` uses
  ``default_rng([seed, e, i])``, so it does not depend on thread scheduling or sharding.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from infocam_jax.data import synthetic, transforms

SPLITS = ("train", "validation", "test")
DIGIT_DATASETS = ("digits", "multi_mnist", "cluttered_mnist")
DATASETS = DIGIT_DATASETS + ("cub", "tiny_imagenet", "synthetic", "wsol_metadata")
_FLIP_BY_DEFAULT = {"cub": True, "tiny_imagenet": True, "synthetic": True, "wsol_metadata": True}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a configured dataset.

    Attributes:
      name: config.dataset.
      num_classes: M.
      multi_label: whether batches carry multi-hot ``labels``.
      image_shape: (H, W, C) of the batch images.
      num_examples: {"train", "validation", "test"} -> count.
      max_boxes: G, boxes per image after padding.
      label_prior: float64 [M]; single-label: training class frequencies (sum 1);
        multi-label: fraction of training images containing each label.
      class_names: optional tuple of M names.
    """
    name: str
    num_classes: int
    multi_label: bool
    image_shape: tuple
    num_examples: dict
    max_boxes: int
    label_prior: np.ndarray
    class_names: tuple | None = None


@dataclasses.dataclass
class _Opened:
    """A dataset opened for reading (cached per configuration)."""
    name: str
    sources: Callable[[str], Sequence[dict]]
    num_classes: int
    channels: int
    label_prior_fn: Callable[[bool], np.ndarray]
    class_names: tuple | None = None


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def data_dir(config) -> str:
    """config.data_dir, with "" meaning ~/tensorflow_datasets."""
    d = config.get("data_dir", "") or os.path.join("~", "tensorflow_datasets")
    return os.path.expanduser(d)


def _cache_key(config) -> tuple:
    return (config.dataset, data_dir(config), config.get("manual_dir", ""),
            int(config.get("num_train_examples", 0)), int(config.get("num_test_examples", 0)),
            int(config.get("data_seed", 0)), tuple(config.image_size), int(config.num_classes),
            bool(config.multi_label), int(config.max_boxes), config.get("model", ""),
            config.get("synthetic_channels", 0), config.get("wsol_metadata_root", ""))


def _prior_from_labels(labels: np.ndarray, num_classes: int, multi_label: bool) -> np.ndarray:
    if multi_label:
        labels = np.asarray(labels, np.float64).reshape(-1, num_classes)
        return labels.mean(0) if labels.shape[0] else np.zeros(num_classes)
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64)
    if counts.shape[0] != num_classes:
        raise ValueError(f"training labels reach {counts.shape[0] - 1}, beyond "
                         f"config.num_classes={num_classes}")
    return counts / max(counts.sum(), 1.0)


def random_flip(config) -> bool:
    """Training flips for natural images (cub, tiny_imagenet, synthetic), never for digits (a
    mirrored digit is another glyph); ``config.random_flip`` overrides."""
    return bool(config.get("random_flip", _FLIP_BY_DEFAULT.get(config.dataset, False)))


def _open_synthetic(config) -> _Opened:
    # Configs of file-based sets leave the sizes at 0: fall back to a small default.
    sizes = synthetic.split_sizes(config.get("num_train_examples", 0) or 64,
                                  config.get("num_test_examples", 0) or 32)
    channels = int(config.get("synthetic_channels", 0)
                   or (1 if config.get("model", "") == "digits_cnn" else 3))
    make = lambda split: synthetic.SyntheticSource(
        split, num_examples=sizes[split], image_size=config.image_size, channels=channels,
        num_classes=config.num_classes, multi_label=config.multi_label,
        max_boxes=config.max_boxes, seed=config.get("data_seed", 0))
    srcs = {s: make(s) for s in SPLITS}

    def prior(multi_label):
        src = srcs["train"]
        if multi_label:
            labels = np.zeros((len(src), config.num_classes))
            for i in range(len(src)):
                labels[i, src.label(i)] = 1.0
            return _prior_from_labels(labels, config.num_classes, True)
        return _prior_from_labels([src.label(i)[0] for i in range(len(src))],
                                  config.num_classes, False)

    return _Opened("synthetic", srcs.__getitem__, int(config.num_classes), channels, prior)


def _open_wsol_metadata(config) -> _Opened:
    """Any dataset in the reference WSOL metadata format (see data/wsol_metadata.py)."""
    from infocam_jax.data import wsol_metadata
    splits = dict(config.get("wsol_splits", None) or wsol_metadata.SPLITS)
    srcs = wsol_metadata.open_sources(config.manual_dir, config.wsol_metadata_root,
                                      config.get("wsol_mask_root", ""), splits)
    m = int(config.num_classes)
    return _Opened("wsol_metadata", srcs.__getitem__, m, 3,
                   lambda _: _prior_from_labels(srcs["train"].labels, m, False))


def _prepare_builder(config):
    name = config.dataset
    ddir = data_dir(config)
    manual = config.get("manual_dir", "")
    if name in DIGIT_DATASETS:
        from infocam_jax.data import digit_builders  # teammate's module, imported lazily
        return digit_builders.prepare_digit_dataset(
            name, data_dir=ddir, manual_dir=manual,
            num_train=int(config.num_train_examples), num_test=int(config.num_test_examples),
            seed=int(config.data_seed),
            canvas_size=tuple(config.image_size) if name == "cluttered_mnist" else None)
    if name == "cub":
        from infocam_jax.data import cub
        return cub.prepare(data_dir=ddir, manual_dir=manual)
    if name == "tiny_imagenet":
        from infocam_jax.data import tiny_imagenet
        return tiny_imagenet.prepare(data_dir=ddir, manual_dir=manual)
    raise ValueError(f"config.dataset must be one of {DATASETS}; got {name!r}")


def _open_cub_catalog(config) -> _Opened:
    """CUB through the tfds catalog builder (TensorFlow installed, no manual directory)."""
    from infocam_jax.data import cub
    if int(config.num_classes) != cub.NUM_CLASSES:
        raise ValueError(f"config.num_classes={config.num_classes} but CUB has {cub.NUM_CLASSES}")
    if config.multi_label:
        raise ValueError("config.multi_label=True but CUB is single-label")
    srcs = cub.catalog_sources(data_dir=data_dir(config))
    counts = np.asarray(srcs["train_label_counts"], np.float64)
    return _Opened("cub", srcs.__getitem__, cub.NUM_CLASSES, 3, lambda _: counts / counts.sum())


def _open_builder(config) -> _Opened:
    import tensorflow_datasets as tfds

    try:
        builder = _prepare_builder(config)
    except FileNotFoundError:
        from infocam_jax.data import cub
        if config.dataset != "cub" or not cub.tensorflow_available():
            raise
        logging.warning("CUB manual directory not found; falling back to the tfds catalog "
                        "builder caltech_birds2011 (TensorFlow is installed)")
        return _open_cub_catalog(config)
    features = builder.info.features
    label_feature = features["label"] if "label" in features else None
    num_classes = int(config.num_classes)
    if isinstance(label_feature, tfds.features.ClassLabel):
        if label_feature.num_classes != num_classes:
            raise ValueError(
                f"config.num_classes={num_classes} but dataset {config.dataset!r} has "
                f"{label_feature.num_classes} classes")
    if config.multi_label and "labels" not in features:
        raise ValueError(f"config.multi_label=True but dataset {config.dataset!r} has no "
                         f"multi-hot 'labels' (single-label dataset)")
    channels = features["image"].shape[-1]
    sources: dict = {}
    lock = threading.Lock()

    def source(split):
        with lock:
            if split not in sources:
                sources[split] = builder.as_data_source(split)
            return sources[split]

    if channels is None:
        channels = np.asarray(source("train")[0]["image"]).shape[-1]
    metadata = dict(builder.info.metadata or {})

    def prior(multi_label):
        counts = metadata.get("train_label_counts")
        if counts is not None and not multi_label:
            return _prior_from_labels(np.repeat(np.arange(len(counts)), counts), num_classes,
                                      False)
        cache = os.path.join(os.fspath(builder.data_dir),
                             f"infocam_label_prior_{'multi' if multi_label else 'single'}.json")
        if os.path.exists(cache):
            with open(cache) as f:
                value = np.asarray(json.load(f), np.float64)
            if value.shape == (num_classes,):
                return value
        # Read every training label once, skipping image decoding.
        src = builder.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
        key = "labels" if multi_label else "label"
        labels = [np.asarray(src[i][key]) for i in range(len(src))]
        value = _prior_from_labels(np.stack(labels) if labels else np.zeros((0,)), num_classes,
                                   multi_label)
        try:
            with open(cache, "w") as f:
                json.dump(value.tolist(), f)
        except OSError:
            pass  # read-only data dir: recompute next time
        return value

    names = metadata.get("class_names")
    return _Opened(config.dataset, source, num_classes, int(channels), prior,
                   tuple(names) if names else None)


def open_dataset(config) -> _Opened:
    """Prepares (once per process and configuration) and opens the configured dataset."""
    if config.dataset not in DATASETS:
        raise ValueError(f"config.dataset must be one of {DATASETS}; got {config.dataset!r}")
    key = _cache_key(config)
    with _CACHE_LOCK:
        if key not in _CACHE:
            opener = {"synthetic": _open_synthetic,
                      "wsol_metadata": _open_wsol_metadata}.get(config.dataset, _open_builder)
            _CACHE[key] = opener(config)
        return _CACHE[key]


def _source(opened: _Opened, split: str):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    return opened.sources(split)


def get_info(config) -> DatasetInfo:
    """Static facts of the configured dataset (prepares it on first call)."""
    opened = open_dataset(config)
    return DatasetInfo(
        name=config.dataset,
        num_classes=opened.num_classes,
        multi_label=bool(config.multi_label),
        image_shape=(int(config.image_size[0]), int(config.image_size[1]), opened.channels),
        num_examples={s: len(_source(opened, s)) for s in SPLITS},
        max_boxes=int(config.max_boxes),
        label_prior=np.asarray(opened.label_prior_fn(bool(config.multi_label)), np.float64),
        class_names=opened.class_names,
    )


def steps_per_epoch(config, batch_size: int) -> int:
    """Training steps per epoch for a *global* batch of ``batch_size`` (drop remainder).

    ``make_iterator(..., training=True, batch_size=batch_size // process_count, ...)`` yields
    exactly this many batches on every process.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    return len(_source(open_dataset(config), "train")) // int(batch_size)


def eval_steps(config, split: str, batch_size: int, process_count: int = 1) -> int:
    """Number of (padded) eval batches each process yields for per-process ``batch_size``."""
    n = len(_source(open_dataset(config), split))
    return math.ceil(math.ceil(n / process_count) / batch_size)


def example_indices(num_examples: int, *, training: bool, batch_size: int, epoch: int = 0,
                    seed: int = 0, process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """The record indices one process reads, in order; -1 marks eval padding.

    Training: ``default_rng([seed, epoch]).permutation(N)[:S * b * P][process_index::P]`` with
    ``S = N // (b * P)`` steps. Eval: ``arange(N)[process_index::P]`` padded with -1 to a
    multiple of ``b`` and to the same number of batches on every process.

    Returns:
      int64 [steps * batch_size].
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count; got {process_index}, "
                         f"{process_count}")
    n = int(num_examples)
    if training:
        steps = n // (batch_size * process_count)
        if steps == 0:
            raise ValueError(
                f"{n} training examples cannot fill one batch of {batch_size} per process on "
                f"{process_count} processes")
        order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
        return order[:steps * batch_size * process_count][process_index::process_count]
    steps = math.ceil(math.ceil(n / process_count) / batch_size)
    mine = np.arange(n, dtype=np.int64)[process_index::process_count]
    return np.concatenate([mine, np.full(steps * batch_size - mine.size, -1, np.int64)])


class BatchIterator:
    """Iterator over batch dicts with a known length (``len(it)`` = number of batches).

    ``close()`` (also called once the batches are exhausted) stops grain's worker processes,
    if any; an iterator abandoned early is cleaned up when garbage-collected.
    """

    def __init__(self, iterable, num_batches: int):
        self._it = iter(iterable)
        self._n = num_batches

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        try:
            return next(self._it)
        except StopIteration:
            self.close()
            raise

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def _example_fn(config, opened: _Opened, src, *, training: bool, epoch: int, seed: int):
    image_size = (int(config.image_size[0]), int(config.image_size[1]))
    max_boxes = int(config.max_boxes)
    multi_label = bool(config.multi_label)
    m = opened.num_classes
    channels = opened.channels  # plain values: `load` is pickled into grain worker processes
    dataset = str(config.dataset)
    kwargs = dict(image_size=image_size, resize_size=int(config.get("resize_size", 0)),
                  eval_protocol=config.get("eval_protocol", "center_crop"),
                  flip=random_flip(config))
    pad_image = transforms.normalize(np.zeros(image_size + (opened.channels,), np.uint8))
    warned = []

    def load(index: int, record: dict | None = None) -> dict:
        """Example ``index`` (-1: eval padding); ``record`` = ``src[index]`` when already read."""
        index = int(index)
        if index < 0:
            out = {"image": pad_image, "label": np.int32(0),
                   "boxes": np.zeros((max_boxes, 4), np.int32),
                   "box_labels": np.zeros(max_boxes, np.int32),
                   "box_valid": np.zeros(max_boxes, bool), "valid": np.bool_(False)}
            if multi_label:
                out["labels"] = np.zeros(m, np.float32)
            return out
        if record is None:
            record = src[index]
        image = np.asarray(record["image"])
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[-1] != channels:
            raise ValueError(f"{dataset} record {index}: image shape {image.shape}, "
                             f"expected {channels} channels")
        boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
        box_labels = np.asarray(record["box_labels"], np.int32).reshape(-1)
        if boxes.shape[0] > max_boxes:
            raise ValueError(f"{dataset} record {index} has {boxes.shape[0]} boxes, more "
                             f"than config.max_boxes={max_boxes}")
        if box_labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"{dataset} record {index}: {boxes.shape[0]} boxes but "
                             f"{box_labels.shape[0]} box_labels")
        if kwargs["resize_size"] == 0 and image.shape[:2] != image_size and not warned:
            warned.append(True)
            logging.warning("%s: records are %s but config.image_size is %s and resize_size is 0: "
                            "resizing every image (and its boxes) to image_size", dataset,
                            image.shape[:2], image_size)
        rng = np.random.default_rng([int(seed), int(epoch), index]) if training else None
        image, int_boxes, visible = transforms.preprocess(image, boxes, training=training,
                                                          rng=rng, **kwargs)
        g = int_boxes.shape[0]
        padded = np.zeros((max_boxes, 4), np.int32)
        padded[:g] = int_boxes
        valid_boxes = np.zeros(max_boxes, bool)
        valid_boxes[:g] = visible
        padded_labels = np.zeros(max_boxes, np.int32)
        padded_labels[:g] = box_labels
        label = int(record["label"])
        if not 0 <= label < m:
            raise ValueError(f"{dataset} record {index}: label {label} outside "
                             f"[0, {m})")
        out = {"image": transforms.normalize(image), "label": np.int32(label), "boxes": padded,
               "box_labels": padded_labels, "box_valid": valid_boxes, "valid": np.bool_(True)}
        if multi_label:
            if "labels" not in record:
                raise ValueError(f"config.multi_label=True but {dataset} records carry no "
                                 f"multi-hot 'labels'")
            labels = np.asarray(record["labels"], np.float32).reshape(-1)
            if labels.shape != (m,):
                raise ValueError(f"{dataset} record {index}: labels shape {labels.shape}, "
                                 f"expected ({m},)")
            out["labels"] = labels
        return out

    return load


def collate(examples: Sequence[dict]) -> dict:
    """Stacks per-example dicts (images already normalised, in the worker threads) into a batch."""
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def make_iterator(config, split: str, *, training: bool, batch_size: int, epoch: int = 0,
                  seed: int = 0, process_index: int = 0,
                  process_count: int = 1) -> BatchIterator:
    """Batches of one process (see docs/interfaces.md for the dict).

    Args:
      config: ml_collections config (dataset, data_dir, manual_dir, image_size, resize_size,
        eval_protocol, max_boxes, num_classes, multi_label, ...).
      split: "train", "validation" or "test".
      training: True: shuffled (a pure function of (seed, epoch)), augmented, drop remainder;
        False: stored order, no augmentation, last batch padded with ``valid`` False.
      batch_size: the per-process batch size.
      epoch, seed: order / augmentation seeds.
      process_index, process_count: this host's shard.

    Returns:
      A BatchIterator (``len()`` = number of batches) of dicts: image float32 [b,H,W,C], label
      int32 [b], labels float32 [b,M] (multi-label only), boxes int32 [b,G,4], box_labels int32
      [b,G], box_valid bool [b,G], valid bool [b].
    """
    import grain

    opened = open_dataset(config)
    src = _source(opened, split)
    indices = example_indices(len(src), training=training, batch_size=batch_size, epoch=epoch,
                              seed=seed, process_index=process_index,
                              process_count=process_count)
    load = _example_fn(config, opened, src, training=training, epoch=epoch, seed=seed)
    read_many = getattr(src, "__getitems__", None)

    def load_batch(batch_indices: np.ndarray) -> dict:
        real = [int(i) for i in batch_indices if i >= 0]
        records = list(read_many(real)) if read_many and real else [src[i] for i in real]
        examples = [load(i, r) for i, r in zip(real, records)]
        examples += [load(-1)] * (len(batch_indices) - len(real))
        return collate(examples)

    threads = max(int(config.get("data_threads", 2)), 0)
    workers = int(config.get("data_workers", 0))
    if workers < 0:
        raise ValueError(f"config.data_workers must be >= 0, got {workers}")
    batches = list(indices.reshape(-1, batch_size))
    ds = grain.MapDataset.source(batches).map(load_batch)
    # Each pool thread assembles whole batches; prefetch two batches per thread.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                              prefetch_buffer_size=2 * threads))
    if workers > 0 and batches:
        _absl_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=min(workers, len(batches)),
                                                         per_worker_buffer_size=2))
    return BatchIterator(ds, len(batches))


def _absl_flags_parsed() -> None:
    """grain's worker processes read absl flags: outside an absl app, use their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
