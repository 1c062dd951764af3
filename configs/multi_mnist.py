"""Double-digit MNIST (paper §3.3): sigmoid vs PC-sigmoid on real MNIST digits.

Canvases of 28x56 with up to two MNIST digits (left / right, each present with probability 0.7,
empty canvases removed), built from the four IDX .gz files in `manual_dir` (default: the folder
named by the environment variable INFOCAM_MNIST_DIR; or --config.manual_dir=/path).
Trains the small CNN-GAP with a sigmoid and a PC-sigmoid head (sub-workdirs per head) and
prints the per-digit classification and CAM-vs-infoCAM localisation table.

Command:
    python launch/train.py --config=configs/multi_mnist.py --workdir=workdirs/multi_mnist
Expected runtime: about 1 hour on 2 idle CPU cores (2 heads x 10 epochs x 60k canvases at
~400 images/s); minutes on one GPU.
"""
from infocam_jax import config as base


def get_config(arg: str | None = None):
    """Returns the double-digit MNIST config; `arg="runlocal"` shrinks it to a smoke run."""
    c = base.base_config()
    c.dataset = "multi_mnist"
    c.manual_dir = base.mnist_dir()  # INFOCAM_MNIST_DIR; or --config.manual_dir
    c.num_train_examples = 60000
    c.num_test_examples = 10000
    c.image_size = (28, 56)
    c.resize_size = 0
    c.eval_protocol = "resize"
    c.max_boxes = 2
    c.model = "digits_cnn"
    c.num_classes = 10
    c.multi_label = True
    c.loss = "pc_sigmoid"
    c.heads = ("sigmoid", "pc_sigmoid")
    c.optimizer.learning_rate = 0.3
    c.optimizer.lr_ratio = 1.0
    c.optimizer.decay_epochs = 6
    c.num_epochs = 10
    c.batch_size = 128
    c.eval_batch_size = 500
    c.region_size = 3
    c.upsample = "bilinear"
    return base.finish(c, arg)
