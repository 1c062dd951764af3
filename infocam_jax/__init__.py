"""infocam-jax: CAM, infoCAM and infoCAM+ for weakly-supervised object localisation in JAX.

The user-facing modules, by their short names::

    from infocam_jax import cams, posthoc, display, boxes, metrics, losses, models, data

Layers (docs/interfaces.md): ``maps`` / ``boxes`` / ``metrics`` / ``losses`` (the maths),
``native`` (the compiled box kernel), ``models`` (backbones), ``methods`` (WSOL methods),
``data``, ``train``, ``evaluation``, ``experiments``, ``config`` and ``cli``.

The short names load on first access (PEP 562), so that importing a JAX-free part of the package
(the score-map tool's host engine, ``infocam_jax.native``) does not import JAX.
"""
import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    "cams": "infocam_jax.maps.cams",
    "posthoc": "infocam_jax.maps.posthoc",
    "display": "infocam_jax.maps.display",
    "boxes": "infocam_jax.boxes",
    "metrics": "infocam_jax.metrics",
    "losses": "infocam_jax.losses",
    "models": "infocam_jax.models",
    "data": "infocam_jax.data",
}

if TYPE_CHECKING:
    from infocam_jax import boxes, data, losses, metrics, models
    from infocam_jax.maps import cams, display, posthoc


def __getattr__(name):
    if name in _PUBLIC:
        module = importlib.import_module(_PUBLIC[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'infocam_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))


__all__ = sorted(_PUBLIC)
