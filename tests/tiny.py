"""Test helper module, not a test file: the tiny training config that test_train, test_errors
and the other training tests import (``import tiny``; no files, seconds to run).

It holds no tests and asserts nothing on purpose; pytest does not collect it (its name does not
match ``test_*.py``). tests/two_devices.py is the other such helper.
"""
from infocam_jax import config as base


def tiny_config(**overrides):
    """Digits CNN (width 4) on synthetic 16x32 canvases: one step of 8, one eval batch of 8.

    ``overrides`` set top-level fields (``optimizer=...`` replaces the whole sub-config).
    """
    c = base.base_config()
    c.dataset = "synthetic"
    c.image_size = (16, 32)
    c.num_train_examples = 16
    c.num_test_examples = 16
    c.model = "digits_cnn"
    c.model_options.width = 4
    c.num_classes = 10
    c.multi_label = True
    c.loss = "pc_sigmoid"
    c.heads = ()
    c.num_epochs = 1
    c.batch_size = 8
    c.eval_batch_size = 8
    c.max_steps_per_epoch = 1
    c.max_eval_batches = 1
    c.keep_checkpoints = 1
    for k, v in overrides.items():
        c[k] = v
    return c
