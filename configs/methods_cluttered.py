"""Cluttered MNIST, all six WSOL methods at convergence: the method x map-kind study and the
paper's Table-5 ablation (infocam_jax/experiments/methods_table.py).

The digits CNN-GAP (``digits_cnn``, width 16) is trained on single-label cluttered-MNIST canvases
with the data and schedule of docs/results.md §4 (`infocam_jax.config.cluttered_mnist_config`:
20,000 training canvases of 64 x 64, 3 epochs of batch 64, LR x0.1 after epoch 2; validation
and test halves of 2,000 canvases) once per method of ``methods`` (CAM, ADL, HaS, ACoL, SPG,
CutMix with the reference's default hyper-parameters, infocam_jax/methods/), learning rate and
seed:

* the learning rate of each method is chosen from ``learning_rates`` on the validation top-1
  classification of the first seed; the other seeds train at the chosen rate;
* each run's last epoch is evaluated (the reference README: "We suggest to use the last
  checkpoint"); every map kind (CAM, infoCAM, infoCAM+ with the image and the region rival) is
  read under MaxBoxAccV2, GT-known Loc and Top-1 Loc with the score threshold chosen on the
  validation split, on 100 score thresholds (the reference's ``--cam_curve_interval=0.01``
  example);
* CAM and ADL runs are also read at R = 1..5 with the subtraction term off / mean / least-likely
  (Table 5), from the same checkpoints.

Command (from the repository root; real MNIST in ``INFOCAM_MNIST_DIR``):
    python launch/reproduce.py --config=configs/methods_cluttered.py \\
        --workdir=workdirs/methods_cluttered --seeds=0,1,2 \\
        --figure=workdirs/methods_cluttered/maps.png
Runtime: hours on 2 CPU cores (ACoL and SPG cost about 3x and 5x a CAM step on the digits
CNN); every run is cached in its folder, so a stopped invocation resumes where it left off.
The measured wall-clock per run is in the summary (``train s / run``) and docs/results.md §4.2.
Smoke run: --config=configs/methods_cluttered.py:runlocal --config.dataset=synthetic (minutes).

ACoL / SPG use the digits CNN's spec (models/digits.py: head widths 4 x width = 64, SPG taps
pool2 / conv3_1); ADL sits at "2M 31" (the digits CNN's default for method "adl").
"""
from infocam_jax import config as base

METHODS = ("cam", "adl", "has", "acol", "spg", "cutmix")


def get_config(arg: str | None = None):
    """Returns the config; `arg="runlocal"` shrinks it to a smoke run."""
    c = base.cluttered_mnist_config()
    c.methods = METHODS
    c.method = "cam"
    c.map_kinds = ("cam", "infocam", "infocam_plus", "infocam_plus_region")
    c.learning_rates = (0.1, 0.3)
    c.ablation_methods = ("cam", "adl")
    c.ablation_region_sizes = (1, 2, 3, 4, 5)
    c.num_test_examples = 4000
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
