"""Flax linen backbones for WSOL: VGG16-GAP, ResNet50 (layer4 stride 1), a digits CNN-GAP,
InceptionV3, DeiT-Ti/S/B (``deit.py``; token-GAP or class-token head), each a spec (trunk,
neck, taps, ADL positions, layouts); one ``Network`` takes a method's head (built by
``infocam_jax.methods``).

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

WSOL methods (a method head, batch transform, loss): ``infocam_jax.methods.create_model``, which
builds on :func:`create` (``layout=``, ``method_head=``); backbone specs (how a backbone exposes
its trunk, neck, taps and ADL positions) in ``models/spec.py``.

Pretrained backbones: ``launch/convert_weights.py`` turns a torchvision state dict into an
``.npz``; load it into fresh variables with
``convert.merge_pretrained(variables, convert.load_variables(path))`` (the head stays fresh).
"""
from typing import Any, Dict

import jax
import jax.numpy as jnp

from infocam_jax.models import spec
from infocam_jax.models import adl as adl_lib
from infocam_jax.models.adl import ADL
from infocam_jax.models.layers import CONV_IMPLS
from infocam_jax.models.network import Head, Network
# Backbones register their spec on import, in the order of MODEL_NAMES (one line each).
from infocam_jax.models import vgg  # noqa: F401 pylint: disable=unused-import
from infocam_jax.models import resnet  # noqa: F401 pylint: disable=unused-import
from infocam_jax.models import digits as digits_lib
from infocam_jax.models import inception  # noqa: F401 pylint: disable=unused-import
from infocam_jax.models import deit  # noqa: F401 pylint: disable=unused-import

__all__ = ["create", "classifier_kernel", "new_layer_mask", "adl_maps", "MODEL_NAMES",
           "DTYPES", "ADL", "Network", "Head"]

_COMMON = ("adl_positions", "adl_drop_rate", "adl_gamma", "axis_name", "dtype",
           "conv_impl")
MODEL_NAMES = tuple(spec.SPECS)
# Compute dtypes: "bfloat16" runs convolutions and matmuls in bfloat16 (mixed precision);
# parameters, BatchNorm statistics, features, logits and the head stay float32.
DTYPES = ("float32", "bfloat16")


def create(name: str, num_classes: int, large_feature_map: bool = False, *,
           layout: str = "cam", method_head: Head | None = None, **options: Any):
    """Builds a backbone network: the GAP + Dense head, or a method's head.

    Args:
      name: one of ``MODEL_NAMES`` ("vgg16_gap", "resnet50", "digits_cnn", "inception_v3",
        "deit_tiny", "deit_small", "deit_base", "deit_{tiny,small,base}_distilled").
      num_classes: M >= 1, outputs of the classifier head.
      large_feature_map: the reference WSOL evaluation's option: vgg16_gap without pool4,
        resnet50 with layer3 stride 1 (28x28 features at 224 for both; default False: 14x14).
        digits_cnn: False only.
      layout: the backbone layout (``spec.LAYOUTS``; "cam" default, "adl": the default ADL
        positions and ADL's neck where a backbone has one; the others: a method's variant).
      method_head: None (GAP + Dense ``head``) or a :class:`Head` (``infocam_jax.methods``).
      **options: adl_positions (str of position codes; "" = no ADL; default "" and, with
        layout "adl", the reference's positions: vgg16_gap "3M 43 53", resnet50 "30 40 42",
        digits_cnn "2M 31" (ours); VGG/digits "3M 4M 53" style, ResNet "30 40 42" style),
        adl_drop_rate (0.75, in [0, 1]), adl_gamma (0.9, in [0, 1]), axis_name (BatchNorm
        sync axis; accepted and unused by BN-free VGG), dtype (compute dtype of the
        convolutions, one of ``DTYPES``: "float32" (default) or "bfloat16"; parameters,
        BatchNorm statistics, the returned features / logits and the heads stay float32),
        conv_impl ("auto" (default): "explicit" on the CPU backend, "xla" on GPU/TPU;
        "explicit": convolution kernel gradients as explicit matmuls, faster on XLA:CPU;
        "xla": plain autodiff, what cuDNN wants; same values up to rounding), width
        (digits_cnn only, base channel count, 16); DeiT only: head ("tokens_gap" default or
        "cls"), patch_size, embed_dim, depth, num_heads, mlp_ratio, img_size
        (``models/deit.py``).

    Returns:
      A flax.linen Module. GAP head: ``apply(variables, images, train=...)`` returns
      ``(logits [B, M], features [B, h, w, K])``; a method head: ``apply(variables, images,
      train=..., labels=None)`` returns its outputs (``outputs[0]`` is the logits).

    Raises:
      ValueError: unknown name, layout or option (listing the valid ones), or a bad option
        value (naming the field).
    """
    options = _check_create(name, num_classes, large_feature_map, layout, options)
    if layout == "adl" and "adl_positions" not in options:
        options["adl_positions"] = spec.SPECS[name].adl_default
    codes = adl_lib.parse_positions(options.pop("adl_positions", ""),
                                    spec.get(name).adl_codes(large_feature_map), name)
    width = options.get("width")
    if width is not None:
        digits_lib.check_width(width)
    extra = {k: v for k, v in options.items() if k not in _COMMON and k != "width"}
    spec.SPECS[name].check_options(extra)
    return Network(name, num_classes, layout, method_head, large_feature_map, codes,
                   options.get("adl_drop_rate", 0.75), options.get("adl_gamma", 0.9),
                   options.get("dtype", jnp.float32), options.get("conv_impl", "auto"),
                   options.get("axis_name"), width, tuple(sorted(extra.items())))


def _check_create(name, num_classes, large_feature_map, layout, options) -> dict:
    """The validated options of :func:`create` (dtype resolved); ValueError naming the field."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if layout not in spec.SPECS[name].layouts:
        raise ValueError(f"layout {layout!r} is not available for backbone {name!r}; "
                         f"available layouts: {', '.join(spec.SPECS[name].layouts)}")
    valid = _COMMON + spec.SPECS[name].options
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; "
                         f"valid options: {', '.join(valid)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(large_feature_map, bool):
        raise ValueError(f"large_feature_map must be a bool, got {large_feature_map!r}")
    if large_feature_map and not spec.SPECS[name].large_feature_map_ok:
        raise ValueError(f"large_feature_map=True is not defined for {name}")
    options = dict(options)
    if "dtype" in options:
        options["dtype"] = _compute_dtype(options["dtype"])
    if options.get("conv_impl", "auto") not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, "
                         f"got {options['conv_impl']!r}")
    adl_lib.check_rates(options.get("adl_drop_rate", 0.75), options.get("adl_gamma", 0.9))
    return options


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


def new_layer_mask(name: str, params: Dict[str, Any], layout: str = "cam"):
    """Which parameters are new layers that train with ``lr_ratio`` x the base learning rate.

    The reference WSOL evaluation's split (each spec's ``is_new_layer``): VGG16-GAP: all but
    conv1_1..conv5_3 (conv6, head, method heads; for the "guidance" layout also conv4 / conv5, which the
    reference keeps outside its ``features``); ResNet50: layer4 and head (method heads
    train at the base rate there, as in the reference); InceptionV3: all but ``Conv2d_*`` and
    ``Mixed_*`` (the neck A3_1b / A3_2b and every head). digits_cnn has no pretrained part, so
    every leaf is False (the whole network uses the base learning rate).

    Args:
      name: model name as in :func:`create`.
      params: ``variables["params"]`` (not the whole variables dict).
      layout: the layout the model was built with (``spec.LAYOUTS``; a method's
        ``Method.layout``).

    Returns:
      A pytree with the structure of ``params`` and bool leaves.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if "params" in params:
        raise ValueError("pass variables['params'], not the whole variables dict")

    if layout not in spec.LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(spec.LAYOUTS)}")
    is_new = spec.SPECS[name].is_new_layer

    def mark(path, _):
        return is_new(path[0].key, layout)

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
