"""Input pipeline shared by every dataset: records -> box-aware transforms -> padded batches
(the records come from :mod:`infocam_jax.data.sources`).

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
  outputs back into the same order, so batches are identical to the threaded path's. Worker
  batches cross processes with uint8 images (a quarter of the float32 bytes) and are
  normalised in the consuming process, one vectorised pass per batch. The
  dataset is pickled into each worker (started per iterator, i.e. once per epoch: a few
  seconds each); scripts need a ``__main__`` guard. grain reads its own absl flags, so an
  unparsed ``absl.flags.FLAGS`` (a notebook, a test) is marked parsed with its defaults.
* **Augmentation randomness**: example ``i`` of epoch ``e`` uses
  ``default_rng([seed, e, i])``, so it does not depend on thread scheduling or sharding.
"""
from __future__ import annotations

import logging
import math
from typing import Iterator, Sequence

import numpy as np

from infocam_jax.data import transforms
from infocam_jax.data.sources import _Opened, _source, open_dataset, random_flip

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


def _padding_example(pad_image, image_size, max_boxes: int, num_classes: int,
                     multi_label: bool, masks: bool) -> dict:
    """The example of an eval padding slot (``valid`` False, nothing else set)."""
    out = {"image": pad_image, "label": np.int32(0),
           "boxes": np.zeros((max_boxes, 4), np.int32),
           "box_labels": np.zeros(max_boxes, np.int32),
           "box_valid": np.zeros(max_boxes, bool), "valid": np.bool_(False)}
    if multi_label:
        out["labels"] = np.zeros(num_classes, np.float32)
    if masks:
        out["mask"] = out["ignore"] = np.zeros(image_size, bool)
    return out


def _record_image_and_boxes(record: dict, where: str, channels: int, max_boxes: int):
    """A record's image (HWC) and its boxes, checked: (image, float32 boxes [g, 4], int32
    box_labels [g])."""
    image = np.asarray(record["image"])
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] != channels:
        raise ValueError(f"{where}: image shape {image.shape}, expected {channels} channels")
    boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
    box_labels = np.asarray(record["box_labels"], np.int32).reshape(-1)
    if boxes.shape[0] > max_boxes:
        raise ValueError(f"{where} has {boxes.shape[0]} boxes, more than "
                         f"config.max_boxes={max_boxes}")
    if box_labels.shape[0] != boxes.shape[0]:
        raise ValueError(f"{where}: {boxes.shape[0]} boxes but {box_labels.shape[0]} "
                         f"box_labels")
    return image, boxes, box_labels


def _padded_boxes(int_boxes, visible, box_labels, max_boxes: int) -> dict:
    """``boxes`` int32 [G, 4], ``box_labels`` int32 [G] and ``box_valid`` bool [G], padded to
    ``max_boxes``."""
    g = int_boxes.shape[0]
    padded = np.zeros((max_boxes, 4), np.int32)
    padded[:g] = int_boxes
    valid_boxes = np.zeros(max_boxes, bool)
    valid_boxes[:g] = visible
    padded_labels = np.zeros(max_boxes, np.int32)
    padded_labels[:g] = box_labels
    return {"boxes": padded, "box_labels": padded_labels, "box_valid": valid_boxes}


def _record_multi_hot(record: dict, where: str, dataset: str, num_classes: int) -> np.ndarray:
    """A record's multi-hot ``labels``, float32 [M], checked."""
    if "labels" not in record:
        raise ValueError(f"config.multi_label=True but {dataset} records carry no "
                         f"multi-hot 'labels'")
    labels = np.asarray(record["labels"], np.float32).reshape(-1)
    if labels.shape != (num_classes,):
        raise ValueError(f"{where}: labels shape {labels.shape}, expected ({num_classes},)")
    return labels


def _record_pixels(record: dict, where: str, image_size) -> dict:
    """A record's PxAP ground truth ``mask`` / ``ignore``, bool [H, W], checked."""
    out = {}
    for key in ("mask", "ignore"):
        pixels = np.asarray(record[key], bool)
        if pixels.shape != image_size:
            raise ValueError(f"{where}: {key} shape {pixels.shape}, "
                             f"expected config.image_size {image_size}")
        out[key] = pixels
    return out


def _example_fn(config, opened: _Opened, src, *, training: bool, epoch: int, seed: int,
                normalize: bool = True):
    """``load(index, record) -> example dict``; with ``normalize=False`` the image stays uint8
    (worker processes ship 4x fewer bytes; :func:`_normalize_batch` finishes it)."""
    image_size = (int(config.image_size[0]), int(config.image_size[1]))
    max_boxes = int(config.max_boxes)
    multi_label = bool(config.multi_label)
    m = opened.num_classes
    channels = opened.channels  # plain values: `load` is pickled into grain worker processes
    dataset = str(config.dataset)
    kwargs = dict(image_size=image_size, resize_size=int(config.get("resize_size", 0)),
                  eval_protocol=config.get("eval_protocol", "center_crop"),
                  flip=random_flip(config))
    masks = bool(getattr(src, "has_masks", False)) and not training
    pad_image = np.zeros(image_size + (opened.channels,), np.uint8)
    if normalize:
        pad_image = transforms.normalize(pad_image)
    warned = []

    def load(index: int, record: dict | None = None) -> dict:
        """Example ``index`` (-1: eval padding); ``record`` = ``src[index]`` when already read."""
        index = int(index)
        if index < 0:
            return _padding_example(pad_image, image_size, max_boxes, m, multi_label, masks)
        if record is None:
            record = src[index]
        where = f"{dataset} record {index}"
        image, boxes, box_labels = _record_image_and_boxes(record, where, channels, max_boxes)
        if kwargs["resize_size"] == 0 and image.shape[:2] != image_size and not warned:
            warned.append(True)
            logging.warning("%s: records are %s but config.image_size is %s and resize_size is 0: "
                            "resizing every image (and its boxes) to image_size", dataset,
                            image.shape[:2], image_size)
        rng = np.random.default_rng([int(seed), int(epoch), index]) if training else None
        image, int_boxes, visible = transforms.preprocess(image, boxes, training=training,
                                                          rng=rng, **kwargs)
        label = int(record["label"])
        if not 0 <= label < m:
            raise ValueError(f"{where}: label {label} outside [0, {m})")
        image = transforms.normalize(image) if normalize else np.asarray(image, np.uint8)
        out = {"image": image, "label": np.int32(label),
               **_padded_boxes(int_boxes, visible, box_labels, max_boxes),
               "valid": np.bool_(True)}
        if multi_label:
            out["labels"] = _record_multi_hot(record, where, dataset, m)
        if masks:
            out.update(_record_pixels(record, where, image_size))
        return out

    return load


def collate(examples: Sequence[dict]) -> dict:
    """Stacks per-example dicts into a batch."""
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _normalize_batch(batch: dict) -> dict:
    """The uint8 ``image`` of a worker batch -> float32, as the threaded path gives it (the same
    element-wise ``transforms.normalize``, so the batches are bit-identical)."""
    return {**batch, "image": transforms.normalize(batch["image"])}


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
      [b,G], box_valid bool [b,G], valid bool [b]; evaluation splits of mask datasets
      (``WsolMetadataSource.has_masks``) also mask, ignore bool [b,H,W] (PxAP's pixels).
    """
    import grain

    opened = open_dataset(config)
    src = _source(opened, split)
    indices = example_indices(len(src), training=training, batch_size=batch_size, epoch=epoch,
                              seed=seed, process_index=process_index,
                              process_count=process_count)
    workers = int(config.get("data_workers", 0))
    if workers < 0:
        raise ValueError(f"config.data_workers must be >= 0, got {workers}")
    load = _example_fn(config, opened, src, training=training, epoch=epoch, seed=seed,
                       normalize=workers == 0)
    read_many = getattr(src, "__getitems__", None)

    def load_batch(batch_indices: np.ndarray) -> dict:
        real = [int(i) for i in batch_indices if i >= 0]
        records = list(read_many(real)) if read_many and real else [src[i] for i in real]
        examples = [load(i, r) for i, r in zip(real, records)]
        examples += [load(-1)] * (len(batch_indices) - len(real))
        return collate(examples)

    threads = max(int(config.get("data_threads", 2)), 0)
    batches = list(indices.reshape(-1, batch_size))
    ds = grain.MapDataset.source(batches).map(load_batch)
    # Each pool thread assembles whole batches; prefetch two batches per thread.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                              prefetch_buffer_size=2 * threads))
    if workers > 0 and batches:
        _absl_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=min(workers, len(batches)),
                                                         per_worker_buffer_size=2))
    if workers > 0:
        # Batches cross processes as uint8 (a quarter of the float32 bytes) and are
        # normalised here, in one vectorised pass per batch.
        ds = ds.map(_normalize_batch)
    return BatchIterator(ds, len(batches))


def _absl_flags_parsed() -> None:
    """grain's worker processes read absl flags: outside an absl app, use their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
