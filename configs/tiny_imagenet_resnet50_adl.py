"""Tiny-ImageNet, ResNet50 + ADL: Table 1 of the paper (CAM, infoCAM, infoCAM+).

Trains with the authors' hyper-parameters (infocam_jax/config.py `table1_config`), keeps the epoch
with the best validation top-1 classification accuracy, then evaluates CAM, infoCAM and
infoCAM+ on the test half of the original validation images (GT-known Loc, Top-1 Loc, Top-1/5
Cls, MaxBoxAccV2) and prints the Table-1-shaped Markdown table.

Needs the raw dataset under `manual_dir` and ImageNet weights converted to .npz:
    python launch/train.py --config=configs/tiny_imagenet_resnet50_adl.py --workdir=workdirs/tiny_imagenet_resnet50_adl \
        --config.manual_dir=/path/to/tiny-imagenet-200 \
        --config.pretrained=/path/to/resnet50.npz
Expected runtime: about 2-3 GPU-days on two 2080-Ti-class GPUs (200 epochs of 100,000 64x64 images).
Smoke run (seconds to a minute, no files): --config=configs/tiny_imagenet_resnet50_adl.py:runlocal --config.dataset=synthetic
"""
from infocam_jax import config as base


def get_config(arg: str | None = None):
    """Returns the config; `arg="runlocal"` shrinks it to a smoke run."""
    return base.finish(base.table1_config("tiny_imagenet", "resnet50", adl=True), arg)
