"""Datasets and input pipelines (no TensorFlow needed).

Public API (docs/interfaces.md)::

    info = data.get_info(config)                 # DatasetInfo
    it = data.make_iterator(config, split, training=..., batch_size=..., epoch=0, seed=0,
                            process_index=0, process_count=1)
    data.steps_per_epoch(config, global_batch_size)

Sources (``config.dataset``): "digits", "multi_mnist", "cluttered_mnist" (digit_builders),
"cub" (cub.py), "tiny_imagenet" (tiny_imagenet.py), "synthetic" (synthetic.py).
tensorflow_datasets is imported only when a builder is used.
"""
from infocam_jax.data.pipeline import eval_steps, make_iterator, steps_per_epoch
from infocam_jax.data.sources import DATASETS, DatasetInfo, get_info

__all__ = ["DATASETS", "DatasetInfo", "eval_steps", "get_info", "make_iterator",
           "steps_per_epoch"]
