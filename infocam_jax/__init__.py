"""infocam-jax: CAM, infoCAM and infoCAM+ for weakly-supervised object localisation in JAX."""

__version__ = "0.1.0"
