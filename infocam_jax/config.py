"""The base experiment config, its shared recipes, and the one place where a config is checked.

``configs/*.py`` import this module (``from infocam_jax import config as base``), start from
:func:`base_config` or a recipe (:func:`table1_config`, :func:`wsol_metadata_config`,
:func:`imagenet_config`, :func:`cluttered_mnist_config`) and end with :func:`finish`, which
applies the ``:runlocal`` smoke switch (the only one). The drivers (``train.trainer``, the
``infocam-evaluate`` command, the experiment drivers) call :func:`validate` once, before anything
is built or written; the modules below them take typed pieces (``EvalSettings``, the
evaluators) and do not check the config again.

Every field of docs/interfaces.md "Config fields" is defined by :func:`base_config`, so each
experiment file only overrides what differs. Fields beyond the interface (read only by
``infocam_jax.train.trainer``):

  heads                 tuple of loss names; when non-empty, `train_and_evaluate` trains one model
                        per head (`config.loss = head`) in `workdir/<head>/` and returns
                        `{head: results}` (the digits job: sigmoid vs PC-sigmoid).
  max_steps_per_epoch   0 = the whole epoch; > 0 caps training steps per epoch (smoke runs).
  max_eval_batches      0 = the whole split; > 0 caps evaluation batches (smoke runs).
  checkpoint_best       keep a separate "best by validation top-1" checkpoint (paper's selection).
  eval_readings         heads runs: after training, read each head's maps CAM vs infoCAM under
                        both normalisations with thresholds chosen on validation and print one
                        table per head (infocam_jax.experiments.readings; the digits main job).
  dtype                 compute dtype of the backbone: "float32" or "bfloat16" (mixed precision:
                        convolutions in bfloat16; parameters, BatchNorm statistics, loss, CAMs and
                        metrics in float32). Passed to `models.create(..., dtype=...)`.
  data_workers          grain worker processes of the input pipeline (0 = the threaded pipeline in
                        this process, `data_threads` threads); > 0 spreads decoding over cores.
  method                the WSOL method (a name of `infocam_jax.methods.names()`); with
  method_options        its hyper-parameters (defaults: `methods.default_options()`).

No path of any machine is written here: real MNIST comes from ``--config.manual_dir`` or the
environment variable ``INFOCAM_MNIST_DIR`` (:func:`mnist_dir`); the big datasets from
``--config.manual_dir`` / ``--config.wsol_metadata_root``.
"""
from __future__ import annotations

import math
import os

import jax
from ml_collections import config_dict

from infocam_jax import data, devices, methods, models
from infocam_jax.evaluation import evaluators
from infocam_jax.evaluation.settings import EvalSettings
from infocam_jax.train.trainer import Checked

MNIST_DIR_ENV = "INFOCAM_MNIST_DIR"
LOSSES = ("softmax", "pc_softmax", "sigmoid", "pc_sigmoid")
MULTI_LABEL_LOSSES = ("sigmoid", "pc_sigmoid")
DTYPES = ("float32", "bfloat16")
UPSAMPLE_MODES = ("bicubic", "bilinear")
EVAL_PROTOCOLS = ("resize", "center_crop")

# The base config's evaluations (config.evals): cheap validation every epoch, then the protocol.
DEFAULT_EVALS = {"classification": {"type": "classification", "every_epoch": True, "final": False},
                 "localization": {"type": "localization"}}

__all__ = ["Checked", "base_config", "cluttered_mnist_config", "finish", "imagenet_config",
           "mnist_dir", "shrink_for_runlocal", "table1_config", "validate",
           "wsol_metadata_config"]


def mnist_dir() -> str:
    """The real MNIST folder (four IDX .gz files) named by ``INFOCAM_MNIST_DIR``; "" if unset."""
    return os.environ.get(MNIST_DIR_ENV, "")


# ----------------------------------------------------------------------------- the base config

def _data_fields(c: config_dict.ConfigDict) -> None:
    c.dataset = "digits"
    c.data_dir = ""
    c.manual_dir = ""
    c.num_train_examples = 4000
    c.num_test_examples = 1000
    c.data_seed = 0
    c.image_size = (28, 56)
    c.resize_size = 0
    c.eval_protocol = "resize"
    c.max_boxes = 2
    # config.dataset = "wsol_metadata": reference WSOL metadata folder (<root>/<split>/...) and
    # mask folder; images under manual_dir (infocam_jax/data/wsol_metadata.py).
    c.wsol_metadata_root = ""
    c.wsol_mask_root = ""
    c.data_workers = 0


def _model_fields(c: config_dict.ConfigDict) -> None:
    c.model = "digits_cnn"
    c.model_options = config_dict.ConfigDict()
    c.model_options.adl_positions = ""
    c.model_options.adl_drop_rate = 0.75
    c.model_options.adl_gamma = 0.9
    # WSOL method (infocam_jax/methods/). The options' defaults are the methods' own (= the
    # reference's config.py, clovaai/wsolevaluation).
    c.method = "cam"
    c.method_options = config_dict.ConfigDict(methods.default_options())
    c.num_classes = 10
    c.multi_label = True
    c.loss = "sigmoid"
    c.heads = ()
    c.pretrained = ""
    c.dtype = "float32"


def _optimizer_fields(c: config_dict.ConfigDict) -> None:
    # PyTorch-style SGD (L2 weight decay added to the gradient), Nesterov momentum, step decay
    # by `decay_factor` every `decay_epochs`, `lr_ratio` x LR for the new layers.
    c.optimizer = config_dict.ConfigDict()
    c.optimizer.learning_rate = 0.01
    c.optimizer.lr_ratio = 10.0
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4
    c.optimizer.decay_epochs = 60
    c.optimizer.decay_factor = 0.1
    c.num_epochs = 200
    c.batch_size = 128
    c.eval_batch_size = 128
    c.seed = 0


def _eval_fields(c: config_dict.ConfigDict) -> None:
    c.region_size = 3
    c.cam_threshold = 0.2
    c.iou_threshold = 0.5
    c.num_box_thresholds = 1000  # np.arange(0, 1, 1/n): the reference's cam_curve_interval
    c.upsample = "bicubic"
    # How maps become score maps in [0, 1] before thresholding (everywhere maps become boxes):
    # "minmax" = (m - min) / (max - min), the WSOL protocol and the authors' CUB /
    # Tiny-ImageNet code; "max" = max(m, 0) / max(m), the paper's "20% of the maximum" (§3.1).
    c.normalize = "minmax"
    # Box extraction backend of the eval step: "auto" | "native" | "xla" (boxes.largest_box).
    c.box_backend = "auto"
    # Map kinds every evaluator reads unless its entry says otherwise
    # (evaluation.settings.KNOWN_MAP_KINDS); () = by label type (CAM / infoCAM / infoCAM+
    # single-label, CAM / infoCAM multi-label).
    c.map_kinds = ()
    # Post-hoc maps: the layer (module path; "features" = the map GAP consumes) and Score-CAM's
    # channels per forward pass (B * chunk images at once).
    c.posthoc_layer = "features"
    c.posthoc_chunk_size = 32
    # Faithfulness metrics counted per map kind (infocam_jax.metrics.faithfulness, single-label
    # only): "confidence" (average drop / increase in confidence), "road" (ROAD MoRF / LeRF at
    # these percentiles, pytorch-grad-cam's convention: p = percent of pixels kept),
    # "deletion" / "insertion" (RISE's AUCs: causal_steps steps, baselines "zeros" | "blur",
    # causal_chunk_size curve points per forward pass), "complexity" (mean |score map|),
    # "arcc" (pytorch-grad-cam's ARCC and coherency).
    c.eval_faithfulness = ()
    c.road_morf_percentiles = (80,)
    c.road_lerf_percentiles = (20,)
    c.causal_steps = 20
    c.deletion_baseline = "zeros"
    c.insertion_baseline = "blur"
    c.causal_chunk_size = 4
    c.eval_readings = False
    # The evaluations, by name (infocam_jax/evaluation/evaluators.py), the only way to choose
    # them: config.evals.<name> = dict(type="classification" | "localization" | "pxap",
    # every_epoch=..., final=..., <EvalSettings field>=...). By default classification on
    # validation every epoch (model selection) and the full protocol on the chosen checkpoint.
    c.evals = config_dict.ConfigDict(DEFAULT_EVALS)


def base_config() -> config_dict.ConfigDict:
    """Returns a ConfigDict holding every field with a neutral default (the digits setting)."""
    c = config_dict.ConfigDict()
    _data_fields(c)
    _model_fields(c)
    _optimizer_fields(c)
    _eval_fields(c)
    # Bookkeeping.
    c.keep_checkpoints = 3
    c.checkpoint_best = True
    c.log_every_steps = 50
    c.eval_every_epochs = 1
    c.max_steps_per_epoch = 0
    c.max_eval_batches = 0
    # A record, not a switch: True when `get_config("runlocal")` (`--config=FILE:runlocal`, the
    # only smoke switch) shrank the config, so config.json tells a smoke run apart.
    c.runlocal = False
    return c


def shrink_for_runlocal(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """Shrinks `config` in place to a smoke run (one epoch of <= 2 steps, tiny inputs); returns it.

    Idempotent. The dataset is kept (a smoke run on the real files when they exist); tests set
    `config.dataset = "synthetic"` to run without files. Batch sizes of 8 divide 1, 2, 4 or 8
    devices.
    """
    config.runlocal = True
    config.num_epochs = 1
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_examples = 16
    config.num_test_examples = 16
    config.max_steps_per_epoch = 2
    config.max_eval_batches = 2
    config.log_every_steps = 1
    config.keep_checkpoints = 1
    h, w = config.image_size
    if h > 64 or w > 64:
        # Big backbones (VGG16 / ResNet50) at 64x64: 2x2 (ResNet) or 4x4 (VGG) feature maps.
        config.image_size = (64, 64)
        config.resize_size = 0
    return config


def finish(config: config_dict.ConfigDict, arg: str | None) -> config_dict.ConfigDict:
    """Applies the `get_config(arg)` switch shared by all configs ("runlocal" or None/"")."""
    if arg in (None, ""):
        return config
    if arg == "runlocal":
        return shrink_for_runlocal(config)
    raise ValueError(f"unknown config argument {arg!r}: expected '' or 'runlocal'")


# ----------------------------------------------------------------------------- shared recipes

def cluttered_mnist_config() -> config_dict.ConfigDict:
    """Cluttered MNIST (configs/cluttered_mnist.py; configs/methods_cluttered.py builds on it):
    one real MNIST digit (``INFOCAM_MNIST_DIR``) at a random place on a 64x64 canvas with
    clutter, the digits CNN-GAP with a softmax head."""
    c = base_config()
    c.dataset = "cluttered_mnist"
    c.manual_dir = mnist_dir()
    c.num_train_examples = 20000
    c.num_test_examples = 4000
    c.image_size = (64, 64)
    c.resize_size = 0
    c.eval_protocol = "resize"
    c.max_boxes = 1
    c.model = "digits_cnn"
    c.num_classes = 10
    c.multi_label = False
    c.loss = "softmax"
    c.heads = ()
    c.optimizer.learning_rate = 0.3
    c.optimizer.lr_ratio = 1.0
    c.optimizer.decay_epochs = 2
    c.num_epochs = 3
    c.batch_size = 64
    c.eval_batch_size = 500
    c.region_size = 3
    c.upsample = "bicubic"
    return c


def _reference_optimizer(c: config_dict.ConfigDict, learning_rate: float, weight_decay: float,
                         decay_epochs: int) -> None:
    """SGD with Nesterov momentum 0.9, 10 x the LR for the new layers, LR x0.1 every
    ``decay_epochs`` (the reference's and the authors' recipe)."""
    c.optimizer.learning_rate = learning_rate
    c.optimizer.lr_ratio = 10.0
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = weight_decay
    c.optimizer.decay_epochs = decay_epochs
    c.optimizer.decay_factor = 0.1


def wsol_metadata_config(name: str, model: str, *, num_classes: int, max_boxes: int,
                         learning_rate: float, num_epochs: int,
                         decay_epochs: int) -> config_dict.ConfigDict:
    """The reference WSOL training recipe (clovaai/wsolevaluation) on its metadata layout.

    Data: ``config.dataset = "wsol_metadata"``; the images (``--config.manual_dir``, the
    reference's ``dataset/<name>``) and the metadata (``--config.wsol_metadata_root``, its
    ``metadata/<name>``) are given on the command line. From the reference's ``config.py`` /
    ``main.py``: resize 256 + random crop 224 + flip for training, a plain 224 x 224 resize for
    evaluation, SGD with Nesterov momentum 0.9, the classifier at 10 x the LR
    (``lr_classifier_ratio``), LR x0.1 every ``decay_epochs``, ``cam_curve_interval`` 0.001;
    from its README's example command: batch 32, weight decay 5e-4. Used by
    :func:`imagenet_config` and configs/wsol.py.
    """
    del name  # the dataset's reference name: the folders come from the command line
    c = base_config()
    c.dataset = "wsol_metadata"
    c.num_train_examples = 0
    c.num_test_examples = 0
    c.image_size = (224, 224)
    c.resize_size = 256
    c.eval_protocol = "resize"
    c.max_boxes = max_boxes
    c.model = model
    c.num_classes = num_classes
    c.multi_label = False
    c.loss = "softmax"
    _reference_optimizer(c, learning_rate, 5e-4, decay_epochs)
    c.num_epochs = num_epochs
    c.batch_size = 32
    c.eval_batch_size = 64
    c.region_size = 3
    c.num_box_thresholds = 1000  # the reference's cam_curve_interval 0.001
    c.upsample = "bicubic"
    c.log_every_steps = 100
    return c


# ILSVRC through the reference metadata (configs/imagenet_*.py). Placeholders (the tuned values
# are only in the authors' spreadsheet): the README example's VGG16 LR, a ResNet50 LR of the CUB
# order. ILSVRC val (ImageNetV2) has up to 259 boxes per image, test up to 20.
IMAGENET_LEARNING_RATES = {"vgg16_gap": 0.00227913316, "resnet50": 0.0002}
IMAGENET_MAX_BOXES = 259


def imagenet_config(model: str) -> config_dict.ConfigDict:
    """The ILSVRC config for ``model`` ("vgg16_gap" or "resnet50"), configs/imagenet_*.py.

    ImageNet-1k (ILSVRC) through the reference WSOL metadata (``config.dataset =
    "wsol_metadata"``). Layout and splits of Choe et al. (CVPR 2020, clovaai/wsolevaluation):
    images under ``manual_dir`` (their ``dataset/ILSVRC``: ``train/...``, ``val2/...`` =
    ImageNetV2, the *train-fullsup* split, and ``val/...``, the test split), metadata under
    ``wsol_metadata_root`` (their ``metadata/ILSVRC``: ``train``, ``val``, ``test``). Our
    ``validation`` split is their ``val`` (train-fullsup, for threshold and model selection);
    ``test`` is their ``test``.

    Hyper-parameters follow the reference's training code (``main.py`` / ``config.py``): SGD
    with Nesterov momentum 0.9, the classifier at ``lr_classifier_ratio`` = 10 x the backbone
    LR, LR x0.1 every ``lr_decay_frequency`` epochs, resize 256 + random crop 224 + flip for
    training and a plain 224x224 resize for evaluation, batch 32, weight decay 5e-4, 10 epochs
    with decay every 3 (the settings of the README's example command for the 10-epoch
    datasets). The tuned learning rates are published only in the authors' spreadsheet (linked
    from their README), which was not reachable when this was written:
    ``IMAGENET_LEARNING_RATES`` holds placeholders to be checked against it
    (``--config.optimizer.learning_rate=...`` overrides).
    """
    return wsol_metadata_config("ILSVRC", model, num_classes=1000, max_boxes=IMAGENET_MAX_BOXES,
                                learning_rate=IMAGENET_LEARNING_RATES[model], num_epochs=10,
                                decay_epochs=3)


# The authors' settings (their scripts in info_cam/{CUB-200-2011,Tiny-ImageNet}/scripts/):
# SGD Nesterov 0.9, weight decay 1e-4, 200 epochs, LR x0.1 every 60 epochs, lr_ratio 10 for the
# new layers, ADL drop rate 0.75 at "3M 4M 53" (VGG) / "30 40 42" (ResNet).
_TABLE1 = {
    # (dataset, model): learning_rate, batch_size, region_size
    ("cub", "vgg16_gap"): (0.001, 30, 5),
    ("cub", "resnet50"): (0.01, 128, 4),
    ("tiny_imagenet", "vgg16_gap"): (0.001, 1280, 3),
    ("tiny_imagenet", "resnet50"): (0.01, 640, 3),
}
_ADL = {
    # model: positions, gamma (the authors' scripts pass --ADL-thr 0.8 for VGG, 0.90 for ResNet)
    "vgg16_gap": ("3M 4M 53", 0.8),
    "resnet50": ("30 40 42", 0.9),
}
# dataset: image_size, resize_size, eval_protocol, eval_batch_size (CUB: the authors resize 256
# and centre-crop 224; Tiny-ImageNet: --resize-size 64 --crop-size 64 on 64x64 images).
_TABLE1_DATA = {
    "cub": ((224, 224), 256, "center_crop", 64),
    "tiny_imagenet": ((64, 64), 0, "resize", 256),
}


def table1_config(dataset: str, model: str, adl: bool) -> config_dict.ConfigDict:
    """Returns one of the paper's Table-1 settings (CUB / Tiny-ImageNet x VGG16-GAP / ResNet50).

    The raw dataset comes from ``--config.manual_dir``; converted ImageNet weights (.npz) from
    ``--config.pretrained`` ("" = from scratch).

    Args:
      dataset: "cub" or "tiny_imagenet".
      model: "vgg16_gap" or "resnet50".
      adl: whether the Attention-based Dropout Layer is inserted (at the authors' positions).
    """
    if (dataset, model) not in _TABLE1:
        raise ValueError(f"no Table-1 setting for dataset={dataset!r}, model={model!r}")
    lr, batch, region = _TABLE1[(dataset, model)]
    c = base_config()
    c.dataset = dataset
    c.model = model
    c.num_classes = 200
    c.multi_label = False
    # The paper: "The traditional softmax is used ... both datasets are balanced".
    c.loss = "softmax"
    c.heads = ()
    c.max_boxes = 1
    c.num_train_examples = 0
    c.num_test_examples = 0
    c.image_size, c.resize_size, c.eval_protocol, c.eval_batch_size = _TABLE1_DATA[dataset]
    c.pretrained = ""
    c.model_options.adl_positions = _ADL[model][0] if adl else ""
    c.model_options.adl_drop_rate = 0.75
    c.model_options.adl_gamma = _ADL[model][1]
    _reference_optimizer(c, lr, 1e-4, 60)
    c.num_epochs = 200
    c.batch_size = batch
    c.region_size = region
    c.upsample = "bicubic"
    c.keep_checkpoints = 3
    c.log_every_steps = 20
    return c


# ----------------------------------------------------------------------------- validation

def _get(node, field: str, prefix: str = "config."):
    if field not in node:
        raise ValueError(f"{prefix}{field} is missing (infocam_jax.config.base_config defines "
                         f"every field)")
    return node[field]


def _check_choice(config, field: str, choices) -> None:
    value = _get(config, field)
    if value not in choices:
        raise ValueError(f"config.{field} must be one of {tuple(choices)}, got {value!r}")


def _check_int(config, field: str, low: int, node=None, prefix: str = "config.") -> int:
    node = config if node is None else node
    value = _get(node, field, prefix)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{prefix}{field} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{prefix}{field} must be >= {low}, got {value!r}")
    return value


def _check_data(config) -> None:
    _check_choice(config, "dataset", data.DATASETS)
    for field in ("num_train_examples", "num_test_examples", "resize_size", "max_eval_batches",
                  "max_steps_per_epoch", "data_workers", "data_seed"):
        _check_int(config, field, 0)
    _check_int(config, "max_boxes", 1)
    size = tuple(_get(config, "image_size"))
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"config.image_size must be two positive ints (H, W), got {size!r}")
    _check_choice(config, "eval_protocol", EVAL_PROTOCOLS)


def _check_loss(config) -> None:
    loss = _get(config, "loss")
    if loss not in LOSSES:
        raise ValueError(f"config.loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    multi = loss in MULTI_LABEL_LOSSES
    if multi != bool(_get(config, "multi_label")):
        raise ValueError(f"config.loss={loss!r} does not fit config.multi_label="
                         f"{bool(config.multi_label)} (sigmoid losses are for multi-label sets)")
    for head in tuple(config.get("heads", ()) or ()):
        if head not in LOSSES or (head in MULTI_LABEL_LOSSES) != multi:
            raise ValueError(f"config.heads lists {head!r}: each head must be a loss of "
                             f"{LOSSES} fitting config.multi_label={bool(config.multi_label)}")


def _check_network(config) -> tuple:
    """Backbone, dtype, classes; returns the WSOL method and its options (`methods.check_config`)."""
    _check_choice(config, "model", models.MODEL_NAMES)
    _check_choice(config, "dtype", DTYPES)
    _check_int(config, "num_classes", 1)
    return methods.check_config(config)


def _check_training(config) -> None:
    devices.check_batch_divisible(_get(config, "batch_size"), "config.batch_size")
    for field in ("num_epochs", "eval_batch_size", "log_every_steps", "keep_checkpoints"):
        _check_int(config, field, 1)
    if config.eval_batch_size % jax.process_count():
        raise ValueError(f"config.eval_batch_size={config.eval_batch_size} must be divisible by "
                         f"the number of processes ({jax.process_count()})")
    _check_int(config, "eval_every_epochs", 0)
    opt = _get(config, "optimizer")
    for field in ("learning_rate", "lr_ratio", "momentum", "weight_decay", "decay_factor"):
        value = _get(opt, field, "config.optimizer.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise ValueError(f"config.optimizer.{field} must be a finite number >= 0, got "
                             f"{value!r}")
    _check_int(config, "decay_epochs", 1, node=opt, prefix="config.optimizer.")
    if opt.get("name", "sgd") not in ("sgd", "adamw"):
        raise ValueError(f"config.optimizer.name must be 'sgd' or 'adamw', got "
                         f"{opt.get('name')!r}")


def validate(config: config_dict.ConfigDict) -> Checked:
    """Checks every field of ``config`` before anything is built or written.

    Returns:
      The typed pieces (:class:`Checked`): the protocol and the evaluators.

    Raises:
      ValueError naming the first field out of range, of the wrong kind, or contradicting
      another (a loss and ``multi_label``, a method and its options, an evaluator's entry).
    """
    _check_loss(config)
    _check_training(config)
    _check_data(config)
    method, method_options = _check_network(config)
    _check_choice(config, "upsample", UPSAMPLE_MODES)
    try:
        settings = EvalSettings.from_config(config)
    except ValueError as e:
        raise ValueError(f"config: {e}") from e
    return Checked(settings=settings, evals=tuple(evaluators.build(config)), method=method,
                   method_options=method_options)
