"""ImageNet-1k (ILSVRC), ResNet50, with the reference WSOL evaluation's data and settings.

See configs/imagenet_common.py for the layout (reference metadata, train-fullsup `val` split
for selection) and the hyper-parameters.

    python launch/train.py --config=configs/imagenet_resnet50.py --workdir=workdirs/imagenet_resnet50 \
        --config.manual_dir=/path/to/dataset/ILSVRC \
        --config.wsol_metadata_root=/path/to/wsolevaluation/metadata/ILSVRC \
        --config.pretrained=/path/to/resnet50.npz
Smoke run (no files): --config=configs/imagenet_resnet50.py:runlocal --config.dataset=synthetic
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from configs import common, imagenet_common  # noqa: E402  pylint: disable=g-import-not-at-top


def get_config(arg: str | None = None):
    """Returns the config; `arg="runlocal"` shrinks it to a smoke run."""
    return common.finish(imagenet_common.imagenet_config("resnet50"), arg)
