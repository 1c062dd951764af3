"""ImageNet-1k (ILSVRC) through the reference WSOL metadata (``config.dataset = "wsol_metadata"``).

Layout and splits of Choe et al. (CVPR 2020, clovaai/wsolevaluation): images under
``manual_dir`` (their ``dataset/ILSVRC``: ``train/...``, ``val2/...`` = ImageNetV2, the
*train-fullsup* split, and ``val/...``, the test split), metadata under ``wsol_metadata_root``
(their ``metadata/ILSVRC``: ``train``, ``val``, ``test``). Our ``validation`` split is their
``val`` (train-fullsup, for threshold and model selection); ``test`` is their ``test``.

Hyper-parameters follow the reference's training code (``main.py`` / ``config.py``): SGD with
Nesterov momentum 0.9, the classifier at ``lr_classifier_ratio`` = 10 x the backbone LR, LR
x0.1 every ``lr_decay_frequency`` epochs, resize 256 + random crop 224 + flip for training and
a plain 224x224 resize for evaluation, batch 32, weight decay 5e-4, 10 epochs with decay every 3
(the settings of the README's example command for the 10-epoch datasets). The tuned learning
rates are published only in the authors' spreadsheet (linked from their README), which was not
reachable when this file was written: ``LEARNING_RATES`` holds placeholders to be checked
against it (``--config.optimizer.learning_rate=...`` overrides).
"""
import pathlib

from configs import common

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"
# Placeholders (see the docstring): the README example's VGG16 LR, a ResNet50 LR of the CUB order.
LEARNING_RATES = {"vgg16_gap": 0.00227913316, "resnet50": 0.0002}
# ILSVRC val (ImageNetV2) has up to 259 boxes per image, test up to 20.
MAX_BOXES = 259


def imagenet_config(model: str):
    """The ILSVRC config for ``model`` ("vgg16_gap" or "resnet50")."""
    return common.wsol_metadata_config("ILSVRC", model, num_classes=1000, max_boxes=MAX_BOXES,
                                       learning_rate=LEARNING_RATES[model], num_epochs=10,
                                       decay_epochs=3)
