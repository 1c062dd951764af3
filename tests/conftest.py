"""Shared test set-up. Tests run on CPU; multi-device tests spawn subprocesses with XLA_FLAGS.

One persistent XLA compilation cache serves the whole run (``_share_compilations``): the xdist
workers and every subprocess they start load a program another process (or an earlier test with
a fresh jit of the same computation) already compiled, instead of compiling it again.

The PyTorch peers (torch, pytorch-grad-cam, torch-cam) are optional: every test that needs one
asks for it through ``pytest.importorskip`` or the ``grad_cam`` fixture and skips with the reason
when it is absent. On CI (``CI=true``) they must be there: ``peers_on_ci`` fails the run otherwise, so the
parity tests can never drop out silently.
"""
import atexit
import importlib
import os
import pathlib
import shutil
import tempfile

import gradcam_peer
import jax
import posthoc_harness
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# torch-cam's parts the tests compare with (SS-CAM, IS-CAM, Smooth Grad-CAM++, deletion /
# insertion).
TORCHCAM_MODULES = ("torchcam.methods", "torchcam.metrics")

CACHE_DIR_ENV = "JAX_COMPILATION_CACHE_DIR"  # read by JAX itself at import (subprocesses)
MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
# Programs that compile faster than this are not worth a file (eager ops, tiny jits).
MIN_COMPILE_SECS = "0.2"


def _share_compilations():
    """Points JAX's persistent compilation cache at one folder for this test run.

    The first process (the pytest controller, or a lone pytest) makes a fresh temporary folder,
    removed when it exits, and exports it: xdist workers and test subprocesses inherit the
    environment, so all of them share the cache. The key is the program, the compile options,
    the device count and XLA_FLAGS, so a hit returns the very executable a compile would give:
    numbers cannot change, only the compile time goes. A folder the caller set already (e.g. a
    persistent one for local reruns) is used as it is.
    """
    if not os.environ.get(CACHE_DIR_ENV):
        folder = tempfile.mkdtemp(prefix="infocam-jax-xla-cache-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[CACHE_DIR_ENV] = folder
    os.environ.setdefault(MIN_COMPILE_ENV, MIN_COMPILE_SECS)
    # This process imported JAX before the variables were set: configure it directly.
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_DIR_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ[MIN_COMPILE_ENV]))


_share_compilations()

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


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.fixture(scope="session", autouse=True)
def peers_on_ci():
    """On CI (``CI=true``): fails the run unless torch, pytorch-grad-cam and torch-cam import.

    pytorch-grad-cam is imported the way every peer test imports it (``gradcam_peer.load``,
    with the torchvision stand-in where torchvision does not load)."""
    if not _on_ci():
        return
    pgc, note = gradcam_peer.load()
    if pgc is None:
        pytest.fail(f"CI=true but a PyTorch peer is missing ({note}): the parity tests with "
                    "torch and pytorch-grad-cam must run on CI (.ci/run installs them)",
                    pytrace=False)
    for name in TORCHCAM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as error:
            pytest.fail(f"CI=true but torch-cam does not import ({name}: {error}): its parity "
                        "tests must run on CI (.ci/run installs it)", pytrace=False)


@pytest.fixture(scope="session")
def grad_cam():
    """The ``pytorch_grad_cam`` module (the post-hoc and ROAD peer), imported after the
    torchvision stand-in is installed where torchvision does not load (``gradcam_peer.load``),
    so that every peer test also runs alone. Skips, with the reason, without torch or the peer.
    """
    pytest.importorskip("torch", reason="torch is not installed: pytorch-grad-cam parity skipped")
    pgc, note = gradcam_peer.load()
    if pgc is None:
        pytest.skip(f"pytorch-grad-cam parity skipped: {note}")
    return pgc


@pytest.fixture(scope="session")
def posthoc_nets():
    """``{arch: (model, variables, torch net)}``: VGG16-GAP and ResNet50 on the same converted
    weights in our models and in PyTorch twins (``posthoc_harness.make_nets``), built once per
    process for every post-hoc parity module. Skips, with the reason, without torch."""
    pytest.importorskip("torch", reason=posthoc_harness.TORCH_REASON)
    return posthoc_harness.make_nets()
