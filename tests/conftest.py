"""Shared test set-up. Tests run on CPU; multi-device tests spawn subprocesses with XLA_FLAGS."""
import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

MNIST_DIR_ENV = "INFOCAM_MNIST_DIR"  # infocam_jax.config.MNIST_DIR_ENV; .ci/run sets it


@pytest.fixture(scope="session")
def shared_mnist_dir():
    """Directory with the four real MNIST IDX .gz files, named by INFOCAM_MNIST_DIR; skips when
    the variable is unset (or names a folder without them)."""
    value = os.environ.get(MNIST_DIR_ENV, "")
    if not value:
        pytest.skip(f"real MNIST: {MNIST_DIR_ENV} is unset (.ci/run sets it to "
                    f"../shared/data/mnist when that folder exists)")
    folder = pathlib.Path(value)
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST IDX files not found in {MNIST_DIR_ENV}={value}")
    return folder
