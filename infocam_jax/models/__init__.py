"""Flax linen backbones for WSOL: VGG16-GAP, ResNet50 (layer4 stride 1), a digits CNN-GAP.

Usage::

    model = models.create("resnet50", 200, adl_positions="30 40 42")
    variables = model.init({"params": key}, images, train=False)
    # training (BN batch statistics, ADL randomness):
    (logits, features), updates = model.apply(
        variables, images, train=True, rngs={"adl": key}, mutable=["batch_stats"])
    # evaluation:
    logits, features = model.apply(variables, images, train=False)
    kernel = models.classifier_kernel(variables)         # [K, M] for CAMs

``images`` are [B, H, W, C] float32 NHWC; ``logits`` [B, M] float32; ``features``
[B, h, w, K] float32 is the map global average pooling consumes (so
``logits == mean(features, (1, 2)) @ kernel + bias``). ``resnet50`` and ``digits_cnn`` have
BatchNorm (``"batch_stats" in variables``) and need ``mutable=["batch_stats"]`` in training;
``vgg16_gap`` has none (passing the mutable list anyway is harmless).
ADL attention maps for visualisation: add ``"intermediates"`` to ``mutable`` and read them with
:func:`adl_maps`.

Pretrained backbones: ``launch/convert_weights.py`` turns a torchvision state dict into an
``.npz``; load it into fresh variables with
``convert.merge_pretrained(variables, convert.load_variables(path))`` (the head stays fresh).
"""
from typing import Any, Dict

import jax
import jax.numpy as jnp

from infocam_jax.models.adl import ADL
from infocam_jax.models.digits import digits_cnn
from infocam_jax.models.layers import CONV_IMPLS
from infocam_jax.models.resnet import ResNet50, resnet50
from infocam_jax.models.vgg import ConvGAP, vgg16_gap

__all__ = ["create", "classifier_kernel", "new_layer_mask", "adl_maps", "MODEL_NAMES",
           "DTYPES", "ADL", "ConvGAP", "ResNet50"]

_COMMON = ("adl_positions", "adl_drop_rate", "adl_gamma", "axis_name", "dtype",
           "conv_impl")
_BUILDERS = {
    "vgg16_gap": (vgg16_gap, _COMMON),
    "resnet50": (resnet50, _COMMON),
    "digits_cnn": (digits_cnn, _COMMON + ("width",)),
}
MODEL_NAMES = tuple(_BUILDERS)
# Compute dtypes: "bfloat16" runs convolutions and matmuls in bfloat16 (mixed precision);
# parameters, BatchNorm statistics, features, logits and the head stay float32.
DTYPES = ("float32", "bfloat16")


def create(name: str, num_classes: int, **options: Any):
    """Builds a model.

    Args:
      name: "vgg16_gap", "resnet50" or "digits_cnn".
      num_classes: M >= 1, outputs of the classifier head.
      **options: adl_positions (str of position codes, "" = no ADL; VGG/digits "3M 4M 53"
        style, ResNet "30 40 42" style), adl_drop_rate (0.75), adl_gamma (0.9), axis_name
        (BatchNorm sync axis; accepted and unused by the BN-free vgg16_gap), dtype (compute dtype
        of the convolutions, one of ``DTYPES``: "float32" (default) or "bfloat16"; parameters,
        BatchNorm statistics, the returned features / logits and the Dense head stay float32),
        conv_impl ("auto" (default): "explicit" on the CPU backend, "xla" on GPU/TPU;
        "explicit": convolution kernel gradients as explicit matmuls, faster on XLA:CPU;
        "xla": plain autodiff, what cuDNN wants; same values up to rounding),
        width (digits_cnn only, base channel count, 16).

    Returns:
      A flax.linen Module; ``apply(variables, images, train=...)`` returns
      ``(logits [B, M], features [B, h, w, K])``.

    Raises:
      ValueError: unknown name or option (listing the valid ones), or a bad option value.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    builder, valid = _BUILDERS[name]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; "
                         f"valid options: {', '.join(valid)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    options = dict(options)
    if "dtype" in options:
        options["dtype"] = _compute_dtype(options["dtype"])
    if options.get("conv_impl", "auto") not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, "
                         f"got {options['conv_impl']!r}")
    if name == "vgg16_gap":
        options.pop("axis_name", None)  # no BatchNorm
    return builder(num_classes, **options)


def _compute_dtype(dtype: Any) -> jnp.dtype:
    try:
        value = jnp.dtype(dtype)
    except TypeError:
        value = None
    if value is None or value.name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return value


def classifier_kernel(variables: Dict[str, Any]) -> jax.Array:
    """The head's Dense kernel ``[K, M]`` (``variables["params"]["head"]["kernel"]``)."""
    try:
        return variables["params"]["head"]["kernel"]
    except (KeyError, TypeError) as e:
        raise ValueError("variables must be a model's variables with "
                         "variables['params']['head']['kernel']") from e


def _is_new_layer(name: str, top: str) -> bool:
    if name == "vgg16_gap":
        return top in ("conv6", "head")
    if name == "resnet50":
        return top == "head" or top.startswith("layer4_")
    return False  # digits_cnn: trained from scratch, one learning rate for all


def new_layer_mask(name: str, params: Dict[str, Any]):
    """Which parameters are new layers that train with ``lr_ratio`` x the base learning rate.

    VGG16-GAP: conv6 and head; ResNet50: layer4 and head (the authors' split between
    pretrained features and the re-initialised classifier). digits_cnn has no pretrained part,
    so every leaf is False (the whole network uses the base learning rate).

    Args:
      name: model name as in :func:`create`.
      params: ``variables["params"]`` (not the whole variables dict).

    Returns:
      A pytree with the structure of ``params`` and bool leaves.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if "params" in params:
        raise ValueError("pass variables['params'], not the whole variables dict")

    def mark(path, _):
        return _is_new_layer(name, path[0].key)

    return jax.tree_util.tree_map_with_path(mark, params)


def adl_maps(state: Dict[str, Any]) -> Dict[str, jax.Array]:
    """ADL attention maps from the ``mutable=["intermediates"]`` state of an apply.

    Args:
      state: the mutated collections returned by ``apply(..., mutable=[..., "intermediates"])``.

    Returns:
      {position code: [B, h, w] float32 channel-mean attention}, e.g. {"3M": ..., "53": ...};
      in training also {code + "/selected": the map that was multiplied in}.
    """
    out = {}
    for module, values in state.get("intermediates", {}).items():
        if not module.startswith("adl_"):
            continue
        code = module[len("adl_"):]
        out[code] = values["attention"][0]
        if "selected" in values:
            out[code + "/selected"] = values["selected"][0]
    return out
