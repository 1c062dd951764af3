"""tfds builders for the synthetic digit datasets: "digits", "multi_mnist", "cluttered_mnist".

* ``digits``: double-digit canvases (28x56) from scikit-learn's handwritten digits (no files, no
  network: the offline default).
* ``multi_mnist``: double-digit canvases (28x56) from the MNIST IDX files in a manual directory
  (paper section 3.3).
* ``cluttered_mnist``: single-label canvases (S x S, default 64) with one MNIST digit at a random
  position and scale among clutter (CPU-scale single-label WSOL benchmark).

The builders write ``array_record`` and images are handed to ``tfds.features.Image`` as PNG bytes,
so ``builder.as_data_source(split)`` gives random-access records with no TensorFlow. The builder
classes are made on first use (:func:`builders`), so importing this module needs no
tensorflow_datasets. Call `prepare_digit_dataset`; the splits are

* ``train``: ``num_train`` canvases from the source's training digits (generation seed
  ``(seed, 0)``);
* ``validation`` / ``test``: ``num_test`` canvases from the source's test digits (seed
  ``(seed, 1)``), dealt into two halves stratified by ``label`` with
  ``splits.stratified_halves(label, seed)`` (paper section 3.1: half for model selection, half
  for reporting).

Record format (one canvas; decoded by ``as_data_source``)::

    image       uint8 [H, W, 1]
    label       int64 scalar        class id; double-digit canvases: the smallest present digit
    labels      float32 [10]        multi-hot set of present digits (one-hot for cluttered_mnist)
    boxes       float32 [G, 4]      (x0, y0, x1, y1) inclusive pixel coords of the canvas, tight
                                    on the digit's nonzero pixels; G = number of placed digits
                                    (1..2 for double digit, 1 for cluttered)
    box_labels  int32 [G]           digit id of each box
    canvas_id   int64 scalar        index of the canvas in its generated set (train set, or the
                                    shared test set for validation/test)

``builder.info.metadata`` holds ``class_names`` ("0".."9"), ``train_label_counts`` (counts of
``label`` over the train split), ``train_labels_mean`` (mean multi-hot ``labels`` over the train
split: the multi-label prior), ``max_boxes`` and ``multi_label``.

On double-digit canvases both sides can hold the same digit: that class is in ``labels`` once
and has two boxes; localisation counts a hit when the predicted box matches any box of the class.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import io
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from infocam_jax.data import composers, mnist_idx, splits

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

NUM_CLASSES = composers.NUM_CLASSES
DOUBLE_DIGIT_CANVAS = (28, 56)
DEFAULT_CLUTTERED_CANVAS = 64

_CITATION = """@inproceedings{qin2020infocam,
  title={Informative Class Activation Maps},
  author={Qin, Zhenyue and Kim, Dongwoo and Gedeon, Tom},
  booktitle={ICML Workshop on Human Interpretability in Machine Learning},
  year={2020}}"""


NAMES = ("digits", "multi_mnist", "cluttered_mnist")


def _tfds():
    """tensorflow_datasets (an optional dependency), imported when a builder class is made."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    return tfds


def config_name(num_train: int, num_test: int, seed: int, canvas_size: tuple[int, int]) -> str:
    """Config name encoding the generation parameters, e.g. "train60000_test10000_seed0_28x56"."""
    return f"train{num_train}_test{num_test}_seed{seed}_{canvas_size[0]}x{canvas_size[1]}"


@functools.cache
def _config_class():
    """``DigitCanvasConfig``, a ``tfds.core.BuilderConfig`` (made on first use, as the builders)."""

    @dataclasses.dataclass(eq=False)
    class DigitCanvasConfig(_tfds().core.BuilderConfig):
        """Generation parameters of a digit canvas set; its name encodes all of them.

        Attributes:
          num_train: canvases in the train split.
          num_test: canvases shared by the validation and test halves.
          seed: generation and split seed.
          canvas_size: (H, W) of the canvas.
        """

        num_train: int = 60000
        num_test: int = 10000
        seed: int = 0
        canvas_size: tuple[int, int] = DOUBLE_DIGIT_CANVAS

    return DigitCanvasConfig


def make_config(num_train: int, num_test: int, seed: int, canvas_size: tuple[int, int]):
    """A ``DigitCanvasConfig`` named by `config_name`."""
    return _config_class()(
        name=config_name(num_train, num_test, seed, canvas_size),
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        canvas_size=tuple(canvas_size),
        description=f"{num_train} train / {num_test} validation+test canvases of size "
        f"{canvas_size[0]}x{canvas_size[1]}, seed {seed}",
    )


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _builder_info(self):
    """``_info`` of the digit builders: the record features and the (filled later) metadata."""
    tfds = _tfds()
    height, width = self.builder_config.canvas_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__class__.__doc__,
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(height, width, 1), encoding_format="png"),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                "labels": tfds.features.Tensor(shape=(NUM_CLASSES,), dtype=np.float32),
                "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                "box_labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
                "canvas_id": np.int64,
            }
        ),
        supervised_keys=("image", "label"),
        disable_shuffling=True,  # records stay in canvas order: record i of "train" is canvas i
        metadata=tfds.core.MetadataDict(),  # filled in _split_generators (see below)
        citation=_CITATION,
    )


def _split_generators(self, dl_manager):
    """``_split_generators`` of the digit builders: composes the canvases of every split."""
    cfg = self.builder_config
    source = self._load_source(dl_manager)
    train = self._compose(*source["train"], cfg.num_train, (cfg.seed, 0))
    test = self._compose(*source["test"], cfg.num_test, (cfg.seed, 1))
    validation_idx, test_idx = splits.stratified_halves(test["label"], cfg.seed)
    # Training-set label statistics so readers can get class priors without a pass over
    # the records: counts of `label` [10] and the mean of the multi-hot `labels` [10].
    self.info.metadata.update(
        {
            "class_names": [str(c) for c in range(NUM_CLASSES)],
            "train_label_counts": np.bincount(train["label"], minlength=NUM_CLASSES).tolist(),
            "train_labels_mean": train["labels"].mean(axis=0).astype(float).tolist(),
            "max_boxes": self.MAX_BOXES,
            "multi_label": self.MULTI_LABEL,
        }
    )
    return {
        "train": self._generate_examples(train, np.arange(cfg.num_train)),
        "validation": self._generate_examples(test, validation_idx),
        "test": self._generate_examples(test, test_idx),
    }


def _generate_examples(
    self, canvases: dict[str, np.ndarray], indices: np.ndarray
) -> Iterator[tuple[int, Any]]:
    """``_generate_examples`` of the digit builders: one record per canvas index."""
    for i in indices:
        valid = canvases["box_valid"][i]
        yield (
            int(i),
            {
                "image": _png(canvases["image"][i, :, :, 0]),
                "label": int(canvases["label"][i]),
                "labels": canvases["labels"][i],
                "boxes": canvases["boxes"][i][valid],
                "box_labels": canvases["box_labels"][i][valid],
                "canvas_id": int(i),
            },
        )


def _mnist_manual_source(dl_manager) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        manual_dir = dl_manager.manual_dir
    except AssertionError as err:  # tfds: "Manual directory ... does not exist or is empty"
        raise FileNotFoundError(
            f"MNIST manual directory missing or empty ({err}). "
            f"{mnist_idx.WHERE_TO_GET_MNIST} Point manual_dir at that directory."
        ) from err
    return mnist_idx.load_mnist(os.fspath(manual_dir))


@functools.cache
def _base_class():
    """The generation logic shared by the digit builders; subclasses pick the digit source and
    the composer."""
    tfds = _tfds()

    class _DigitCanvasBuilder(tfds.core.GeneratorBasedBuilder):
        """Shared generation logic; subclasses pick the digit source and the composer."""

        # Bump when the generated canvases change: prepared data of the same version is reused.
        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
        MAX_BOXES = 2
        MULTI_LABEL = True
        _info = _builder_info
        _split_generators = _split_generators
        _generate_examples = _generate_examples

        @abc.abstractmethod
        def _load_source(self, dl_manager) -> dict[str, tuple[np.ndarray, np.ndarray]]:
            """{"train": (uint8 [N, 28, 28], int [N]), "test": (...)} source digits."""

        @abc.abstractmethod
        def _compose(
            self, images: np.ndarray, labels: np.ndarray, num: int, seed
        ) -> dict[str, np.ndarray]:
            """Builds `num` canvases (a composers.* dict)."""

    return _DigitCanvasBuilder


# The builders' docstrings as their class bodies wrote them (tfds stores a builder's docstring
# as its dataset's description).
_DOCS = {
    "digits": "Double-digit canvases (28x56) from scikit-learn's 1797 handwritten digits "
              "(upsampled).\n\n"
              "    Source digits are split 2/3 train, 1/3 test (stratified, fixed split seed 0), "
              "so train and\n"
              "    validation/test canvases never share a source digit. No files or network "
              "needed.\n    ",
    "multi_mnist": "Double-digit MNIST canvases (28x56), paper section 3.3, from the MNIST IDX "
                   "files.",
    "cluttered_mnist": "Single-label canvases: one MNIST digit (scale 0.8-1.6 of 28 px, random "
                       "position) among\n"
                       "    four 8x8 clutter fragments of other digits that stay >= 2 px away "
                       "from the target box.",
}


@functools.cache
def builders() -> dict:
    """``{"digits": Digits, "multi_mnist": MultiMnist, "cluttered_mnist": ClutteredMnist}``: the
    tfds builder classes, made (and registered with tfds) on first use, so that importing this
    module needs no tensorflow_datasets."""
    base = _base_class()

    class Digits(base):
        __doc__ = _DOCS["digits"]
        BUILDER_CONFIGS: ClassVar[list] = [make_config(12000, 2000, 0, DOUBLE_DIGIT_CANVAS)]

        def _load_source(self, dl_manager):
            return composers.load_sklearn_digits()

        def _compose(self, images, labels, num, seed):
            return composers.compose_double_digit(images, labels, num, seed)

    class MultiMnist(base):
        __doc__ = _DOCS["multi_mnist"]
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            mnist_idx.WHERE_TO_GET_MNIST + " Point manual_dir at that directory."
        )
        BUILDER_CONFIGS: ClassVar[list] = [make_config(60000, 10000, 0, DOUBLE_DIGIT_CANVAS)]

        def _load_source(self, dl_manager):
            return _mnist_manual_source(dl_manager)

        def _compose(self, images, labels, num, seed):
            return composers.compose_double_digit(images, labels, num, seed)

    class ClutteredMnist(base):
        __doc__ = _DOCS["cluttered_mnist"]
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            mnist_idx.WHERE_TO_GET_MNIST + " Point manual_dir at that directory."
        )
        BUILDER_CONFIGS: ClassVar[list] = [
            make_config(60000, 10000, 0, (DEFAULT_CLUTTERED_CANVAS,) * 2)
        ]
        MAX_BOXES = 1
        MULTI_LABEL = False

        def _load_source(self, dl_manager):
            return _mnist_manual_source(dl_manager)

        def _compose(self, images, labels, num, seed):
            return composers.compose_cluttered(
                images, labels, num, seed, canvas_size=self.builder_config.canvas_size[0]
            )

    return dict(zip(NAMES, (Digits, MultiMnist, ClutteredMnist)))


def dataset_spec(name: str) -> dict[str, Any]:
    """Static facts of a digit dataset, for the pipeline's DatasetInfo.

    Returns:
      {"num_classes": 10, "multi_label": bool, "max_boxes": G, "channels": 1,
       "default_canvas_size": (H, W)}.
    """
    if name not in NAMES:
        raise ValueError(f"name must be one of {sorted(NAMES)}, got {name!r}")
    cls = builders()[name]
    return {
        "num_classes": NUM_CLASSES,
        "multi_label": cls.MULTI_LABEL,
        "max_boxes": cls.MAX_BOXES,
        "channels": 1,
        "default_canvas_size": tuple(cls.BUILDER_CONFIGS[0].canvas_size),
    }


def _canvas_size(name: str, canvas_size) -> tuple[int, int]:
    if name == "cluttered_mnist":
        if canvas_size is None:
            return (DEFAULT_CLUTTERED_CANVAS,) * 2
        size = (
            (int(canvas_size),) * 2
            if np.ndim(canvas_size) == 0
            else tuple(int(s) for s in canvas_size)
        )
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(
                f"canvas_size for cluttered_mnist must be an int S or a square (S, S), "
                f"got {canvas_size}"
            )
        return size
    if canvas_size is not None and tuple(np.atleast_1d(canvas_size)) != DOUBLE_DIGIT_CANVAS:
        raise ValueError(
            f"canvas_size for {name} is fixed at {DOUBLE_DIGIT_CANVAS} (None), got {canvas_size}"
        )
    return DOUBLE_DIGIT_CANVAS


def prepare_digit_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None,
    manual_dir: str | os.PathLike | None = None,
    num_train: int,
    num_test: int,
    seed: int,
    canvas_size: int | tuple[int, int] | None = None,
) -> tfds.core.DatasetBuilder:
    """Generates (once; later calls reuse the files) and returns a digit dataset builder.

    No network access: "digits" needs no files, "multi_mnist" and "cluttered_mnist" read the four
    MNIST IDX files from `manual_dir`. Read records with ``builder.as_data_source(split)``
    (split in "train", "validation", "test"; no TensorFlow needed).

    Args:
      name: "digits", "multi_mnist" or "cluttered_mnist".
      data_dir: tfds data directory (None or "" -> tfds default, ~/tensorflow_datasets).
      manual_dir: directory holding the MNIST IDX files (ignored for "digits").
      num_train: train canvases (>= 1).
      num_test: canvases dealt into the validation and test halves (>= 2).
      seed: generation and split seed (>= 0).
      canvas_size: cluttered_mnist: int S or (S, S), default 64; double digit: None (28x56).

    Returns:
      The prepared builder.

    Raises:
      ValueError: unknown name or bad sizes.
      FileNotFoundError: MNIST files missing (the message lists the expected files and where to
        get them).
    """
    if name not in NAMES:
        raise ValueError(f"name must be one of {sorted(NAMES)}, got {name!r}")
    for arg, value, low in (
        ("num_train", num_train, 1),
        ("num_test", num_test, 2),
        ("seed", seed, 0),
    ):
        if int(value) != value or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    size = _canvas_size(name, canvas_size)
    cls = builders()[name]
    config = make_config(int(num_train), int(num_test), int(seed), size)
    if (
        config.name in cls.builder_configs
    ):  # tfds refuses a new object named like a predefined config
        config = cls.builder_configs[config.name]
    builder = cls(
        config=config,
        data_dir=os.fspath(data_dir) if data_dir else None,
        file_format="array_record",
    )
    if name != "digits" and not builder.is_prepared():
        if not manual_dir:
            raise FileNotFoundError(
                f"{name} needs manual_dir (config.manual_dir) pointing at the MNIST files. "
                f"{mnist_idx.WHERE_TO_GET_MNIST}"
            )
        mnist_idx.load_mnist(
            manual_dir
        )  # fail fast with a clear message, before tfds creates directories
    download_config = _tfds().download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir else None
    )
    builder.download_and_prepare(download_config=download_config)
    return builder
