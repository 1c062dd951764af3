"""Shared test set-up. Tests run on CPU; multi-device tests spawn subprocesses with XLA_FLAGS."""
import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO_ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def shared_mnist_dir():
    """Directory with the four real MNIST IDX .gz files; skips when this workplace's shared/ is absent."""
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST IDX files not found at {SHARED_MNIST} (only present in the project workplace)")
    return SHARED_MNIST
