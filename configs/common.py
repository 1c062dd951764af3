"""Shared base of every experiment config, and the `runlocal` smoke-run shrink.

Every field of docs/interfaces.md "Config fields" is defined here, so each experiment file only
overrides what differs. Fields beyond the interface (read only by `infocam_jax.train.trainer`):

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
  method                WSOL method: "cam", "adl", "has", "acol", "spg" or "cutmix"; with
  method_options        its hyper-parameters (HaS grid / drop rate, CutMix beta / prob, ACoL
                        threshold, SPG thresholds). See infocam_jax/methods/.
"""
import pathlib

from ml_collections import config_dict

from infocam_jax import methods

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The workplace keeps real MNIST next to the repository: <repo>/../shared/data/mnist.
DEFAULT_MNIST_DIR = str(REPO_ROOT.parent / "shared" / "data" / "mnist")


def base_config() -> config_dict.ConfigDict:
    """Returns a ConfigDict holding every field with a neutral default (the digits setting)."""
    c = config_dict.ConfigDict()
    # Data.
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
    # Model and loss.
    c.model = "digits_cnn"
    c.model_options = config_dict.ConfigDict()
    c.model_options.adl_positions = ""
    c.model_options.adl_drop_rate = 0.75
    c.model_options.adl_gamma = 0.9
    # WSOL method (infocam_jax/methods/): cam, adl, has, acol, spg, cutmix. The options' defaults
    # are the methods' (= the reference's config.py, clovaai/wsolevaluation).
    c.method = "cam"
    c.method_options = config_dict.ConfigDict(methods.default_options())
    c.num_classes = 10
    c.multi_label = True
    c.loss = "sigmoid"
    c.heads = ()
    c.pretrained = ""
    c.dtype = "float32"
    # Optimiser: PyTorch-style SGD (L2 weight decay added to the gradient), Nesterov momentum,
    # step decay by `decay_factor` every `decay_epochs`, `lr_ratio` x LR for the new layers.
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
    # CAM / evaluation protocol.
    c.region_size = 3
    c.cam_threshold = 0.2
    c.iou_threshold = 0.5
    c.num_box_thresholds = 1000  # np.arange(0, 1, 1/n): the reference's cam_curve_interval
    c.upsample = "bicubic"
    # How maps become score maps in [0, 1] before thresholding (everywhere maps become boxes:
    # eval step, visualisation, reproduction): "minmax" = (m - min) / (max - min), the WSOL
    # protocol and the authors' CUB / Tiny-ImageNet code; "max" = max(m, 0) / max(m), the
    # paper's "20% of the maximum" (§3.1). See boxes.normalize.
    c.normalize = "minmax"
    # Box extraction backend of the eval step: "auto" | "native" | "xla" (boxes.largest_box).
    c.box_backend = "auto"
    # Map kinds of the evaluation (evaluation.settings.KNOWN_MAP_KINDS: the CAM family and the
    # post-hoc maps of infocam_jax.maps.posthoc, e.g. ("cam", "infocam", "gradcam")); () = by label
    # type (CAM / infoCAM / infoCAM+ single-label, CAM / infoCAM multi-label).
    c.map_kinds = ()
    # Post-hoc maps: the layer (module path; "features" = the map GAP consumes) and Score-CAM's
    # channels per forward pass (B * chunk images at once).
    c.posthoc_layer = "features"
    c.scorecam_chunk_size = 32
    # Faithfulness metrics counted per map kind (infocam_jax.metrics.faithfulness, single-label only):
    # "confidence" (average drop / increase in confidence), "road" (ROAD MoRF / LeRF at these
    # percentiles, pytorch-grad-cam's convention: p = percent of pixels kept).
    c.eval_faithfulness = ()
    c.road_morf_percentiles = (80,)
    c.road_lerf_percentiles = (20,)
    c.eval_readings = False
    # Evaluators by name (infocam_jax/evaluation/evaluators.py): config.evals.<name> =
    # dict(type="classification" | "localization" | "pxap", every_epoch=..., final=...,
    # <EvalSettings field>=...). Empty: the list the fields above mean (classification every
    # epoch, the full protocol on the chosen checkpoint, PxAP for mask datasets).
    c.evals = config_dict.ConfigDict()
    # Bookkeeping.
    c.keep_checkpoints = 3
    c.checkpoint_best = True
    c.log_every_steps = 50
    c.eval_every_epochs = 1
    c.max_steps_per_epoch = 0
    c.max_eval_batches = 0
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


def wsol_metadata_config(name: str, model: str, *, num_classes: int, max_boxes: int,
                         learning_rate: float, num_epochs: int,
                         decay_epochs: int) -> config_dict.ConfigDict:
    """The reference WSOL training recipe (clovaai/wsolevaluation) on its metadata layout.

    Data: ``config.dataset = "wsol_metadata"`` with the images under ``<shared data>/<name>``
    and the metadata under ``<shared data>/wsol_metadata/<name>`` (the reference's dataset /
    metadata folders). From the reference's ``config.py`` / ``main.py``: resize 256 + random crop
    224 + flip for training, a plain 224 x 224 resize for evaluation, SGD with Nesterov momentum
    0.9, the classifier at 10 x the LR (``lr_classifier_ratio``), LR x0.1 every
    ``decay_epochs``, ``cam_curve_interval`` 0.001; from its README's example command: batch 32,
    weight decay 5e-4. Used by configs/imagenet_common.py and configs/wsol.py.
    """
    data = REPO_ROOT.parent / "shared" / "data"
    c = base_config()
    c.dataset = "wsol_metadata"
    c.manual_dir = str(data / name)
    c.wsol_metadata_root = str(data / "wsol_metadata" / name)
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
    c.optimizer.learning_rate = learning_rate
    c.optimizer.lr_ratio = 10.0
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.decay_epochs = decay_epochs
    c.optimizer.decay_factor = 0.1
    c.num_epochs = num_epochs
    c.batch_size = 32
    c.eval_batch_size = 64
    c.region_size = 3
    c.num_box_thresholds = 1000  # the reference's cam_curve_interval 0.001
    c.upsample = "bicubic"
    c.log_every_steps = 100
    return c


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


def table1_config(dataset: str, model: str, adl: bool) -> config_dict.ConfigDict:
    """Returns one of the paper's Table-1 settings (CUB / Tiny-ImageNet x VGG16-GAP / ResNet50).

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
    c.loss = "softmax"  # the paper: "The traditional softmax is used ... both datasets are balanced"
    c.heads = ()
    c.max_boxes = 1
    c.num_train_examples = 0
    c.num_test_examples = 0
    if dataset == "cub":
        c.manual_dir = str(REPO_ROOT.parent / "shared" / "data" / "CUB_200_2011")
        c.image_size = (224, 224)
        c.resize_size = 256
        c.eval_protocol = "center_crop"  # authors: resize 256, centre-crop 224
        c.eval_batch_size = 64
    else:
        c.manual_dir = str(REPO_ROOT.parent / "shared" / "data" / "tiny-imagenet-200")
        c.image_size = (64, 64)
        c.resize_size = 0  # authors: --resize-size 64 --crop-size 64 on 64x64 images
        c.eval_protocol = "resize"
        c.eval_batch_size = 256
    # Converted ImageNet weights (.npz from the models' torchvision import); "" = from scratch.
    c.pretrained = ""
    c.model_options.adl_positions = _ADL[model][0] if adl else ""
    c.model_options.adl_drop_rate = 0.75
    c.model_options.adl_gamma = _ADL[model][1]
    c.optimizer.learning_rate = lr
    c.optimizer.lr_ratio = 10.0
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4
    c.optimizer.decay_epochs = 60
    c.optimizer.decay_factor = 0.1
    c.num_epochs = 200
    c.batch_size = batch
    c.region_size = region
    c.upsample = "bicubic"
    c.keep_checkpoints = 3
    c.log_every_steps = 20
    return c
