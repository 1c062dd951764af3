"""Cluttered MNIST, all six WSOL methods: the method x map-kind table (CAM / infoCAM / infoCAM+).

The digits CNN-GAP (``digits_cnn``, width 16) is trained on single-label cluttered-MNIST canvases
(configs/cluttered_mnist.py's data, `infocam_jax.config.cluttered_mnist_config`, fewer of them)
once per method of ``methods`` (CAM, ADL,
HaS, ACoL, SPG, CutMix with the reference's default hyper-parameters, infocam_jax/methods/)
and seed; each run's last epoch is evaluated (the reference README: "We suggest to use the
last checkpoint"); every map kind of every run is then
read under MaxBoxAccV2 with the score threshold chosen on the validation split per IoU
(infocam_jax/experiments/methods_table.py, Eq. (V)), on 100 score thresholds (the reference README's
evaluation example uses ``--cam_curve_interval=0.01``). One table is printed and written to
``<workdir>/summary.md``.

Command (from the repository root; 2 seeds):
    python launch/reproduce.py --config=configs/methods_cluttered.py \
        --workdir=workdirs/methods_cluttered --seeds=0,1
Expected runtime: at most 15 minutes on 2 idle CPU cores for the 2 seeds (training and
evaluation of the 12 runs; the measured figure is in docs/results.md).
Smoke run: --config=configs/methods_cluttered.py:runlocal --config.dataset=synthetic (minutes).

Sizes (chosen so that the 12 runs fit 15 minutes on 2 CPU cores; ACoL and SPG cost about 3x
and 5x a CAM step on the digits CNN): 3,000 training canvases of 64 x 64, 2 epochs of batch 64
(LR 0.3, x0.1 for the last epoch); validation and test halves of 1,000 canvases. ACoL / SPG
use the digits CNN's spec (models/digits.py: head widths 4 x width = 64, SPG taps pool2 /
conv3_1); ADL sits at "2M 31" (the digits CNN's default for method "adl").
"""
from infocam_jax import config as base

METHODS = ("cam", "adl", "has", "acol", "spg", "cutmix")


def get_config(arg: str | None = None):
    """Returns the config; `arg="runlocal"` shrinks it to a smoke run."""
    c = base.cluttered_mnist_config()
    c.methods = METHODS
    c.method = "cam"
    c.map_kinds = ("cam", "infocam", "infocam_plus")
    c.num_train_examples = 3000
    c.num_test_examples = 2000
    c.num_epochs = 2
    c.optimizer.decay_epochs = 1
    c.batch_size = 64
    c.eval_batch_size = 250
    c.num_box_thresholds = 100
    c.keep_checkpoints = 1
    # The last epoch is evaluated (the reference README's advice), so no per-epoch validation.
    c.eval_every_epochs = 0
    c.checkpoint_best = False
    c.log_every_steps = 50
    # "" = method "adl" inserts ADL at the digits CNN's default positions "2M 31".
    c.model_options.adl_positions = ""
    return base.finish(c, arg)
