"""Flax linen backbones for WSOL: VGG16-GAP, ResNet50 (layer4 stride 1), a digits CNN-GAP,
and the WSOL methods that change the network (ADL, ACoL, SPG) on any backbone with a spec.

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

Methods: ``models.create("resnet50", 200, method="acol", large_feature_map=True)``; the apply
contract per method, the losses (:func:`method_loss`) and the evaluation readout
(:func:`readout`, ``cams.fused_maps``) are in ``models/methods.py``; backbone specs (how a
backbone exposes its trunk, neck and taps to the methods) in ``models/spec.py``.

Pretrained backbones: ``launch/convert_weights.py`` turns a torchvision state dict into an
``.npz``; load it into fresh variables with
``convert.merge_pretrained(variables, convert.load_variables(path))`` (the head stays fresh).
"""
from typing import Any, Dict

import jax
import jax.numpy as jnp

from infocam_jax.methods import acol, network, spg
from infocam_jax.models import spec
from infocam_jax.models import adl as adl_lib
from infocam_jax.models import digits as digits_lib
from infocam_jax.models.adl import ADL
from infocam_jax.models.digits import digits_cnn
from infocam_jax.models.layers import CONV_IMPLS
from infocam_jax.methods.network import (Branch, Readout, WSOLNet, main_logits, method_loss,
                                        readout)
from infocam_jax.models.resnet import ResNet50, resnet50
from infocam_jax.models.spec import METHODS, NETWORK_METHODS, network_method
from infocam_jax.models.vgg import ConvGAP, vgg16_gap
# Backbones that exist only as a spec register themselves on import (one line each).
from infocam_jax.models import inception  # noqa: F401 pylint: disable=unused-import

__all__ = ["create", "classifier_kernel", "new_layer_mask", "adl_maps", "MODEL_NAMES",
           "DTYPES", "METHODS", "NETWORK_METHODS", "ADL", "ConvGAP", "ResNet50", "WSOLNet",
           "Branch", "Readout", "main_logits", "method_loss", "network_method", "readout"]

_COMMON = ("adl_positions", "adl_drop_rate", "adl_gamma", "axis_name", "dtype",
           "conv_impl")
_METHOD_OPTIONS = ("acol_drop_threshold", "spg_thresholds", "spg_attention_size")
# Legacy builders: cam / adl networks of these backbones (parameter trees of checkpoints).
_BUILDERS = {
    "vgg16_gap": (vgg16_gap, _COMMON),
    "resnet50": (resnet50, _COMMON),
    "digits_cnn": (digits_cnn, _COMMON + ("width",)),
}
MODEL_NAMES = tuple(dict.fromkeys(tuple(_BUILDERS) + tuple(spec.SPECS)))
# Compute dtypes: "bfloat16" runs convolutions and matmuls in bfloat16 (mixed precision);
# parameters, BatchNorm statistics, features, logits and the head stay float32.
DTYPES = ("float32", "bfloat16")


def _methods_of(name: str):
    if name in spec.SPECS:
        return spec.SPECS[name].methods
    return ("cam", "adl")


def create(name: str, num_classes: int, method: str = "cam", large_feature_map: bool = False,
           **options: Any):
    """Builds a model: a backbone with a WSOL method.

    Args:
      name: one of ``MODEL_NAMES`` ("vgg16_gap", "resnet50", "digits_cnn", and the backbones
        registered as specs, e.g. "inception_v3").
      num_classes: M >= 1, outputs of the classifier head.
      method: "cam" (default), "adl", "has", "acol", "spg" or "cutmix". has / cutmix change
        training only and build the cam network; adl / acol / spg change the network
        (``models.spec``, ``models.acol``, ``models.spg``).
      large_feature_map: the reference WSOL evaluation's option: vgg16_gap without pool4,
        resnet50 with layer3 stride 1 (28x28 features at 224 for both; default False: 14x14,
        the networks as before). digits_cnn: False only.
      **options: adl_positions (str of position codes; "" = no ADL; default "" for cam and the
        reference's positions for method "adl": vgg16_gap "3M 43 53", resnet50 "30 40 42",
        digits_cnn "2M 31" (ours);
        VGG/digits "3M 4M 53" style, ResNet "30 40 42" style; cam / adl only), adl_drop_rate
        (0.75, in [0, 1]), adl_gamma (0.9, in [0, 1]), acol_drop_threshold (0.7, in [0, 1]),
        spg_thresholds (((0.7, 0.01), (0.5, 0.05), (0.7, 0.1)), validated here, used by the
        loss), spg_attention_size (None (default): SPG's attention maps and pixel losses at the
        input size; an int S or a pair (H, W): at that fixed size, as the reference WSOL
        evaluation, which hard-codes 224 x 224 whatever the input; the same at 224 input;
        used by method "spg" only), axis_name (BatchNorm sync axis; accepted and unused by BN-free VGG), dtype
        (compute dtype of the convolutions, one of ``DTYPES``: "float32" (default) or
        "bfloat16"; parameters, BatchNorm statistics, the returned features / logits and the
        heads stay float32), conv_impl ("auto" (default): "explicit" on the CPU backend, "xla"
        on GPU/TPU; "explicit": convolution kernel gradients as explicit matmuls, faster on
        XLA:CPU; "xla": plain autodiff, what cuDNN wants; same values up to rounding),
        width (digits_cnn only, base channel count, 16).

    Returns:
      A flax.linen Module. cam / adl (and has / cutmix): ``apply(variables, images,
      train=...)`` returns ``(logits [B, M], features [B, h, w, K])``; acol / spg:
      ``apply(variables, images, train=..., labels=None)`` returns ``acol.AcolOutput`` /
      ``spg.SpgOutput`` (``outputs[0]`` is the logits; see ``models.methods``).

    Raises:
      ValueError: unknown name, method or option (listing the valid ones), a method the
        backbone does not have, or a bad option value (naming the field).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    net = network_method(method)
    if net not in _methods_of(name):
        raise ValueError(f"method {method!r} is not available for backbone {name!r}; "
                         f"available methods: {', '.join(_available(name))}")
    valid = (_BUILDERS[name][1] if name in _BUILDERS else _COMMON) + _METHOD_OPTIONS
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; "
                         f"valid options: {', '.join(valid)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(large_feature_map, bool):
        raise ValueError(f"large_feature_map must be a bool, got {large_feature_map!r}")
    if large_feature_map and name == "digits_cnn":
        raise ValueError("large_feature_map=True is not defined for digits_cnn")
    options = dict(options)
    if "dtype" in options:
        options["dtype"] = _compute_dtype(options["dtype"])
    if options.get("conv_impl", "auto") not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, "
                         f"got {options['conv_impl']!r}")
    acol_threshold = options.pop("acol_drop_threshold", 0.7)
    if not isinstance(acol_threshold, (int, float)) or not 0.0 <= acol_threshold <= 1.0:
        raise ValueError(f"acol_drop_threshold must be in [0, 1], got {acol_threshold!r}")
    spg.check_thresholds(options.pop("spg_thresholds", spg.DEFAULT_THRESHOLDS))
    attention_size = spg.check_attention_size(options.pop("spg_attention_size", None))
    adl_lib.check_rates(options.get("adl_drop_rate", 0.75), options.get("adl_gamma", 0.9))
    if net in ("acol", "spg") and options.get("adl_positions"):
        raise ValueError(f"adl_positions is only used with method 'cam' or 'adl', got "
                         f"{options['adl_positions']!r} with method {method!r}")
    if net == "adl" and "adl_positions" not in options:
        if name not in spec.SPECS:
            raise ValueError(f"method 'adl' on {name!r} needs adl_positions (no default)")
        options["adl_positions"] = spec.SPECS[name].adl_default
    if name in _BUILDERS and net in ("cam", "adl"):
        builder = _BUILDERS[name][0]
        if name == "vgg16_gap":
            options.pop("axis_name", None)  # no BatchNorm
        if name != "digits_cnn":
            options["large_feature_map"] = large_feature_map
        return builder(num_classes, **options)
    backbone = spec.get(name)
    codes = adl_lib.parse_positions(options.pop("adl_positions", ""),
                                    backbone.adl_codes(large_feature_map), name)
    width = options.get("width")
    if width is not None:
        digits_lib.check_width(width)
    return WSOLNet(name, net, num_classes, large_feature_map, codes,
                   options.get("adl_drop_rate", 0.75), options.get("adl_gamma", 0.9),
                   float(acol_threshold), options.get("dtype", jnp.float32),
                   options.get("conv_impl", "auto"), options.get("axis_name"),
                   width=width, spg_attention_size=attention_size)


def _available(name: str):
    nets = _methods_of(name)
    return [m for m in METHODS if network_method(m) in nets]


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


def _is_new_layer(name: str, top: str, method: str) -> bool:
    if name in spec.SPECS:
        return spec.SPECS[name].is_new_layer(top, network_method(method))
    return False  # digits_cnn: trained from scratch, one learning rate for all


def new_layer_mask(name: str, params: Dict[str, Any], method: str = "cam"):
    """Which parameters are new layers that train with ``lr_ratio`` x the base learning rate.

    The reference WSOL evaluation's split (each spec's ``is_new_layer``): VGG16-GAP: all but
    conv1_1..conv5_3 (conv6, head, ACoL / SPG heads; for SPG also conv4 / conv5, which the
    reference keeps outside its ``features``); ResNet50: layer4 and head (ACoL / SPG heads
    train at the base rate there, as in the reference); InceptionV3: all but ``Conv2d_*`` and
    ``Mixed_*`` (the neck A3_1b / A3_2b and every head). digits_cnn has no pretrained part, so
    every leaf is False (the whole network uses the base learning rate).

    Args:
      name: model name as in :func:`create`.
      params: ``variables["params"]`` (not the whole variables dict).
      method: the method the model was built with.

    Returns:
      A pytree with the structure of ``params`` and bool leaves.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if "params" in params:
        raise ValueError("pass variables['params'], not the whole variables dict")

    network_method(method)

    def mark(path, _):
        return _is_new_layer(name, path[0].key, method)

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
