"""WSOL methods: each is one :class:`~infocam_jax.methods.base.Method` in its own module (cam,
adl, has, cutmix, acol, spg), registered on import; :func:`get` finds one by name and
:func:`create_model` builds a backbone with a method's network."""
# Registration order is the order of ``names()`` (the reference benchmark's table order).
from infocam_jax.methods import cam  # noqa: F401  pylint: disable=unused-import
from infocam_jax.methods import adl  # noqa: F401  pylint: disable=unused-import
from infocam_jax.methods import has  # noqa: F401  pylint: disable=unused-import
from infocam_jax.methods import acol  # noqa: F401  pylint: disable=unused-import
from infocam_jax.methods import spg  # noqa: F401  pylint: disable=unused-import
from infocam_jax.methods import cutmix  # noqa: F401  pylint: disable=unused-import
from infocam_jax.methods.base import (Branch, Method, NoOptions, Options, Readout, TrainMethod,
                                      check_config, create_model, default_options, get, label_methods,
                                      main_logits, method_of, model_options,
                                      multi_label_methods, names, register, unregister)

__all__ = ["Branch", "Method", "NoOptions", "Options", "Readout", "TrainMethod", "check_config",
           "create_model", "default_options", "get", "label_methods", "main_logits", "method_of", "model_options",
           "multi_label_methods", "names", "register", "unregister"]
