"""Dataset sources: which records ``config.dataset`` names, opened once per configuration.

``open_dataset(config)`` prepares (tfds builders: digits, multi_mnist, cluttered_mnist, cub,
tiny_imagenet) or builds (synthetic, wsol_metadata) the configured dataset and returns its
per-split random-access sources, class count, channels and training label prior;
``get_info(config)`` turns that into the public :class:`DatasetInfo`. The batching on top is
:mod:`infocam_jax.data.pipeline`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from typing import Callable, Sequence

import numpy as np

from infocam_jax.data import cub, digit_builders, synthetic, tiny_imagenet, wsol_metadata

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
    splits = dict(config.get("wsol_splits", None) or wsol_metadata.SPLITS)
    h, w = (int(v) for v in config.image_size)
    plain_resize = (int(config.get("resize_size", 0)) == 0
                    or config.get("eval_protocol", "center_crop") == "resize")
    # Pixel ground truth for PxAP where a mask pixel is an image pixel: plain resize, square.
    mask_size = h if plain_resize and h == w else 0
    srcs = wsol_metadata.open_sources(config.manual_dir, config.wsol_metadata_root,
                                      config.get("wsol_mask_root", ""), splits, mask_size)
    m = int(config.num_classes)
    return _Opened("wsol_metadata", srcs.__getitem__, m, 3,
                   lambda _: _prior_from_labels(srcs["train"].labels, m, False))


def _prepare_builder(config):
    name = config.dataset
    ddir = data_dir(config)
    manual = config.get("manual_dir", "")
    if name in DIGIT_DATASETS:
        return digit_builders.prepare_digit_dataset(
            name, data_dir=ddir, manual_dir=manual,
            num_train=int(config.num_train_examples), num_test=int(config.num_test_examples),
            seed=int(config.data_seed),
            canvas_size=tuple(config.image_size) if name == "cluttered_mnist" else None)
    if name == "cub":
        return cub.prepare(data_dir=ddir, manual_dir=manual)
    if name == "tiny_imagenet":
        return tiny_imagenet.prepare(data_dir=ddir, manual_dir=manual)
    raise ValueError(f"config.dataset must be one of {DATASETS}; got {name!r}")


def _open_cub_catalog(config) -> _Opened:
    """CUB through the tfds catalog builder (TensorFlow installed, no manual directory)."""
    if int(config.num_classes) != cub.NUM_CLASSES:
        raise ValueError(f"config.num_classes={config.num_classes} but CUB has {cub.NUM_CLASSES}")
    if config.multi_label:
        raise ValueError("config.multi_label=True but CUB is single-label")
    srcs = cub.catalog_sources(data_dir=data_dir(config))
    counts = np.asarray(srcs["train_label_counts"], np.float64)
    return _Opened("cub", srcs.__getitem__, cub.NUM_CLASSES, 3, lambda _: counts / counts.sum())


def _builder_prior(builder, num_classes: int):
    """``prior(multi_label)`` of a prepared tfds builder: from its metadata's training label
    counts, else from a cached file beside its records, else from one pass over its labels."""
    import tensorflow_datasets as tfds

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

    return prior


def _open_builder(config) -> _Opened:
    import tensorflow_datasets as tfds

    try:
        builder = _prepare_builder(config)
    except FileNotFoundError:
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
    names = dict(builder.info.metadata or {}).get("class_names")
    return _Opened(config.dataset, source, num_classes, int(channels),
                   _builder_prior(builder, num_classes), tuple(names) if names else None)


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
