"""``infocam-convert-weights``: converts a torchvision-format state dict (vgg16 / resnet50 /
inception_v3) into infocam-jax
variables.

    infocam-convert-weights --arch=resnet50 --input=resnet50.pth \
        --output=pretrained/resnet50.npz --num_classes=200
    infocam-convert-weights --arch=inception_v3 --input=inception_v3_google.pth \
        --output=pretrained/inception_v3.npz --num_classes=200
    infocam-convert-weights --arch=deit_small_patch16_224 \
        --input=deit_small_patch16_224-cd65a155.pth --output=pretrained/deit_small.npz \
        --num_classes=200

DeiT (timm / facebookresearch/deit state dicts, ``{"model": ...}`` unwrapped): the token-GAP
network of ``models.create("deit_small", num_classes)``; ``head.*`` / ``head_dist.*`` are dropped
unless ``--include_head``. The released DeiT files cannot be downloaded on this machine.

For inception_v3, torchvision's Mixed_7*, AuxLogits.* and fc.* are dropped (as the reference
WSOL evaluation does) and the WSOL neck (A3_1b, A3_2b) and head are freshly initialised.

The input is a local ``.pth``/``.pt`` (needs torch) or ``.npz`` with torchvision's keys; the
output (``.npz`` or ``.msgpack``) is what ``config.pretrained`` points to. Nothing is downloaded.
"""
import jax
import numpy as np
from absl import app, flags, logging

from infocam_jax.models import convert

FLAGS = flags.FLAGS
flags.DEFINE_enum("arch", None, list(convert.ARCHS), "torchvision architecture of --input.")
flags.DEFINE_string("input", None, "torchvision state dict (.pth/.pt or .npz).")
flags.DEFINE_string("output", None, "converted variables (.npz or .msgpack).")
flags.DEFINE_integer("num_classes", 1000, "classes of the re-initialised head.")
flags.DEFINE_integer("seed", 0, "seed of the new layers' initialisation.")
flags.DEFINE_bool("include_head", False, "also import WSOL head keys (conv6.*, fc.*; "
                  "inception_v3: SPG_A3_1b.0.*, SPG_A3_2b.0.*, SPG_A4.*).")
flags.mark_flags_as_required(["arch", "input", "output"])


def main(argv):
    del argv
    variables = convert.convert_file(FLAGS.arch, FLAGS.input, FLAGS.num_classes, FLAGS.seed,
                                     FLAGS.include_head)
    convert.save_variables(variables, FLAGS.output)
    count = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(variables["params"]))
    logging.info("wrote %s (%s, %d classes, %d parameters)", FLAGS.output, FLAGS.arch,
                 FLAGS.num_classes, count)
    print(f"wrote {FLAGS.output}: {FLAGS.arch}, {FLAGS.num_classes} classes, {count} parameters")


def run() -> None:
    """The ``infocam-convert-weights`` command."""
    app.run(main)
