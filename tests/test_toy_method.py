"""A WSOL method defined here, in the test file, with no library edit: random erasing.

It proves that a method is one object: the toy registers a :class:`methods.Method` with its own
options (read from ``config.method_options.erase_size``) and a batch transform, then trains a
step through the real training code (``training.train_and_evaluate`` on the tiny config) and is
evaluated with CAM, infoCAM and infoCAM+. docs/interfaces.md walks through the same example.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny  # tests/tiny.py (tests/ is on sys.path under pytest)

from infocam_jax import methods
from infocam_jax.methods import base
from infocam_jax.experiments import training

CALLS = []


@dataclasses.dataclass(frozen=True)
class ErasingOptions(methods.Options):
    """``size``: side in pixels of the square erased from each image (config ``erase_size``)."""
    size: int = dataclasses.field(default=4, metadata={"config": "erase_size"})

    def __post_init__(self):
        if isinstance(self.size, bool) or int(self.size) != self.size or self.size < 1:
            raise ValueError(f"erase_size must be an int >= 1, got {self.size!r}")


def erase(options, batch, step_key, device_index):
    """Zeroes one ``size`` x ``size`` square per image at a random corner; no mix."""
    CALLS.append(options.size)  # traced once per compilation
    images = batch["image"]
    b, h, w, _ = images.shape
    key = jax.random.fold_in(jax.random.fold_in(step_key, base.AUGMENT_STREAM), device_index)
    top = jax.random.randint(key, (b,), 0, h - options.size + 1)
    left = jax.random.randint(jax.random.fold_in(key, 1), (b,), 0, w - options.size + 1)
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < top[:, None, None] + options.size)
              & (cols >= left[:, None, None]) & (cols < left[:, None, None] + options.size))
    return dict(batch, image=jnp.where(inside[..., None], 0.0, images)), None


RANDOM_ERASING = methods.Method("random_erasing", options=ErasingOptions, transform=erase,
                                doc="Random erasing: a training-only batch transform.")


@pytest.fixture
def registered():
    methods.register(RANDOM_ERASING)
    CALLS.clear()
    yield RANDOM_ERASING
    methods.unregister(RANDOM_ERASING.name)


def test_registry_lists_the_toy_and_reads_its_options(registered):
    assert "random_erasing" in methods.names()
    assert methods.get("random_erasing") is registered
    config = tiny.tiny_config(method="random_erasing")
    config.method_options.erase_size = 3
    method, options = methods.check_config(config)
    assert method is registered and options == ErasingOptions(3)
    config.method_options.erase_size = 0
    with pytest.raises(ValueError, match="config.method_options.erase_size"):
        methods.check_config(config)


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(ValueError, match="valid methods: cam, adl, has, acol, spg, cutmix"):
        methods.get("random_erasing")


def test_toy_trains_a_step_and_evaluates_cam_infocam_infocam_plus(registered, tmp_path):
    config = tiny.tiny_config(method="random_erasing", multi_label=False, loss="softmax",
                              map_kinds=("cam", "infocam", "infocam_plus"))
    config.method_options.erase_size = 5
    results = training.train_and_evaluate(config, str(tmp_path))
    assert CALLS and set(CALLS) == {5}, "the train step must run the toy's transform"
    for kind in ("cam", "infocam", "infocam_plus"):
        values = {k: v for k, v in results.items() if k.startswith(kind + "/")}
        assert values, f"no {kind} results in {sorted(results)}"
        assert all(np.isfinite(v) for v in values.values()), kind
    assert os.path.exists(os.path.join(str(tmp_path), "config.json"))
