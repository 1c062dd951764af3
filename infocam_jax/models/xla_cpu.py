"""XLA:CPU settings for the convolutional backbones (measured in benchmarks/models.py).

This jaxlib (0.10) hands both matrix products and convolutions to YNNPACK by default. For the
3x3 and 7x7 convolutions of VGG16 and ResNet50 its kernels ran at about half the speed of
XLA's own (Eigen) convolutions on the 2-core reference machine (forward and input gradient;
``benchmarks/conv_layers.py``), while YNNPACK's matrix products (the 1x1 convolutions and
the kernel gradients of ``models.layers``) were as fast as PyTorch's. ``EIGEN_CONVOLUTIONS_FLAG``
therefore keeps YNNPACK for products and takes it off convolutions; the values are equal to
float rounding (the two libraries sum in different orders).

``use_eigen_convolutions()`` adds the flag to ``XLA_FLAGS`` for the whole process. XLA reads the
variable once, when the backend starts, so it must run before the first computation; the
launchers and benchmarks call it first thing. (The same field as a per-executable
``jax.jit(compiler_options=...)`` takes a single enum value, which replaces the whole default
list and moves most products off YNNPACK too: measured slower, so not offered.)
"""
import os

from absl import logging

EIGEN_CONVOLUTIONS_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
# Set INFOCAM_CPU_CONVOLUTIONS=ynn to keep this jaxlib's default.
CHOICE_ENV = "INFOCAM_CPU_CONVOLUTIONS"


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a jax without the helper: assume not started
        return False


def eigen_convolutions_active(environ=None) -> bool:
    """Whether ``XLA_FLAGS`` carries ``EIGEN_CONVOLUTIONS_FLAG`` (read when a step is traced;
    ``models.layers`` then takes the kernel gradients of k x k convolutions from XLA)."""
    environ = os.environ if environ is None else environ
    return EIGEN_CONVOLUTIONS_FLAG in environ.get("XLA_FLAGS", "").split()


def use_eigen_convolutions(environ=None) -> bool:
    """Adds ``EIGEN_CONVOLUTIONS_FLAG`` to ``XLA_FLAGS`` unless the caller already chose.

    Nothing changes when ``XLA_FLAGS`` already sets ``xla_cpu_experimental_ynn_fusion_type``
    (the caller's own choice wins) or when ``INFOCAM_CPU_CONVOLUTIONS=ynn``. Only CPU
    compilation reads the flag. When the JAX backend has already started the flag could not
    take effect: a warning says so and nothing changes.

    Args:
      environ: the environment to change (default ``os.environ``).

    Returns:
      Whether the flag was added.
    """
    environ = os.environ if environ is None else environ
    choice = environ.get(CHOICE_ENV, "eigen").strip().lower()
    if choice not in ("eigen", "ynn"):
        raise ValueError(f"{CHOICE_ENV} must be 'eigen' or 'ynn', got {choice!r}")
    flags = environ.get("XLA_FLAGS", "")
    if choice == "ynn" or "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    if _backend_started():
        logging.warning("XLA:CPU convolution setting not applied: the JAX backend has already "
                        "started (call use_eigen_convolutions() before the first computation)")
        return False
    environ["XLA_FLAGS"] = f"{flags} {EIGEN_CONVOLUTIONS_FLAG}".strip()
    return True
