"""ImageNet-1k (ILSVRC), ResNet50, with the reference WSOL evaluation's data and settings.

See `infocam_jax.config.imagenet_config` for the layout (reference metadata, train-fullsup
`val` split for selection) and the hyper-parameters.

    python launch/train.py --config=configs/imagenet_resnet50.py --workdir=workdirs/imagenet_resnet50 \
        --config.manual_dir=/path/to/dataset/ILSVRC \
        --config.wsol_metadata_root=/path/to/wsolevaluation/metadata/ILSVRC \
        --config.pretrained=/path/to/resnet50.npz
Smoke run (no files): --config=configs/imagenet_resnet50.py:runlocal --config.dataset=synthetic
"""
from infocam_jax import config as base


def get_config(arg: str | None = None):
    """Returns the config; `arg="runlocal"` shrinks it to a smoke run."""
    return base.finish(base.imagenet_config("resnet50"), arg)
