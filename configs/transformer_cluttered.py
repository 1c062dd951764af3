"""Cluttered MNIST with a small transformer: CAM / infoCAM / infoCAM+ / attention rollout / TS-CAM
map / Grad-CAM of one DeiT-style network, MaxBoxAccV2 with the threshold chosen on validation.

The data are configs/cluttered_mnist.py's (`infocam_jax.config.cluttered_mnist_config`: one real
MNIST digit at a random place on a 64x64 canvas with clutter; 20,000 training canvases, 2,000
validation and 2,000 test; digits from ``INFOCAM_MNIST_DIR`` or ``--config.manual_dir``). The
network is ``infocam_jax/models/deit.py``, the module of DeiT-Ti/S/B, at CPU scale (``SIZES``):
patch 8 (an 8x8 grid of 64 patch tokens plus the class token), width 64, 4 blocks of 4 heads,
MLP ratio 4, the token-GAP head (``features`` = the final-norm patch tokens ``[B, 8, 8, 64]``,
averaged, one Dense), about 0.21 M parameters. Trained from scratch with AdamW (decoupled weight
decay 0.05 on the weight matrices, as DeiT / TS-CAM), batch 64, 3 epochs, LR x0.1 for the last
epoch; the learning rate is chosen from ``LEARNING_RATES`` by the method study on seed 0's
validation top-1 classification (``methods_table``: the other seeds train with the chosen rate;
docs/results.md §4.3 says why the grid is 3e-4 and 5e-4).

The table is the method study's (``infocam_jax.experiments.methods_table``, one method, "cam"):
each seed trains one model (the last epoch is evaluated), then every map kind of ``MAP_KINDS``
is read under MaxBoxAccV2 (IoU 0.3 / 0.5 / 0.7, every contour's box) at the score threshold
chosen per IoU on validation (``map_table.v2_selection``), 100 score thresholds, min-max
normalised bicubic maps of the ground-truth class, infoCAM region R = 3. Grad-CAM reads the
tokens of the last block (``blocks_3``, before the final LayerNorm; at ``features`` a GAP head
makes it ReLU(CAM), docs/results.md §4.1); rollout and TS-CAM read every block's attention.

Command (from the repository root; 3 seeds):
    INFOCAM_MNIST_DIR=/path/to/mnist python launch/reproduce.py \
        --config=configs/transformer_cluttered.py --workdir=workdirs/transformer_cluttered \
        --seeds=0,1,2 --config.data_dir=/path/to/tfds_data
Expected runtime: about 10 minutes of training per run (4 runs: both rates with seed 0, then
seeds 1 and 2) plus under a minute of evaluation each, on the shared 2-core machine under load
(the measured figures are in docs/results.md §4.3).
Smoke run (one rate, two steps): --config=configs/transformer_cluttered.py:runlocal
--config.dataset=synthetic.
"""
from infocam_jax import config as base

MAP_KINDS = ("cam", "infocam", "infocam_plus", "rollout", "tscam", "gradcam")
# The DeiT module's options (models/deit.py) for the CPU-scale transformer.
SIZES = {"head": "tokens_gap", "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4,
         "mlp_ratio": 4.0, "img_size": 64}
LEARNING_RATES = (3e-4, 5e-4)


def get_config(arg: str | None = None):
    """Returns the config; `arg="runlocal"` shrinks it to a smoke run."""
    c = base.cluttered_mnist_config()
    c.model = "deit_tiny"
    for key, value in SIZES.items():
        c.model_options[key] = value
    c.methods = ("cam",)
    c.method = "cam"
    c.map_kinds = MAP_KINDS
    c.posthoc_layer = f"blocks_{SIZES['depth'] - 1}"
    c.optimizer.name = "adamw"
    c.learning_rates = LEARNING_RATES
    c.optimizer.learning_rate = LEARNING_RATES[-1]
    c.optimizer.lr_ratio = 1.0
    c.optimizer.weight_decay = 0.05
    c.optimizer.decay_epochs = 2
    c.optimizer.decay_factor = 0.1
    c.num_epochs = 3
    c.batch_size = 64
    c.eval_batch_size = 250
    c.num_box_thresholds = 100
    c.keep_checkpoints = 1
    # The last epoch is evaluated (its validation top-1 chooses the rate); the cheap per-epoch
    # validation top-1 stays for the training curve.
    c.checkpoint_best = False
    c.log_every_steps = 50
    if arg == "runlocal":
        c.learning_rates = LEARNING_RATES[-1:]  # a smoke run trains one rate
    return base.finish(c, arg)
