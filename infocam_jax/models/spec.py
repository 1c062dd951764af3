"""Backbone specs: what a backbone gives the WSOL methods, so a method is one module.

A backbone is described by a :class:`BackboneSpec`. Its ``trunk`` and ``neck`` are plain
functions called inside the network's ``@nn.compact __call__``
(:class:`infocam_jax.models.network.Network`): they create their submodules (``Conv``,
``BatchNorm``, ``ADL``, ...) with explicit names in the caller's scope, so a backbone's parameter
names are flat and the same for every method (``conv4_1``, ``layer3_0``, ...) and one torchvision
key map serves all methods.

* ``trunk(x, train, opts) -> (features [B, h, w, C], taps)``: the feature extractor.
  ``taps`` maps tap names to intermediate maps; SPG reads ``"spg_b1"`` (input of SPG_B_1a) and
  ``"spg_b2"`` (input of SPG_B_2a). ``opts.layout`` lets a trunk take the per-layout variants the
  reference WSOL evaluation hard-wires (e.g. VGG-ACoL's 3x3 pools).
* ``neck(x, train, opts) -> features [B, h, w, K]``: what the class head reads (VGG's conv6
  for CAM, SPG's extra convs, ACoL's 3x3 average pool, or the identity).
* a method head (GAP + Dense for CAM/ADL, ``acol.AcolHead``, ``spg.SpgHead``) follows.

ADL position codes may lie in the trunk or the neck; ``adl_codes(large_feature_map)`` lists
them all in network order and ``adl_default`` is the reference's choice for ``method="adl"``.
"""
import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

# The network layouts a backbone may offer: the plain GAP network ("cam"), the same with
# ADL's reference neck ("adl"), and the reference's variants for a two-branch erasing head
# ("erasing") and a self-guidance head with two taps ("guidance"). A method names the layout
# it needs (``Method.layout``); a spec lists the layouts it has.
LAYOUTS = ("cam", "adl", "erasing", "guidance")


@dataclasses.dataclass(frozen=True)
class TrunkOptions:
    """What a trunk / neck function needs to build itself.

    Attributes:
      layout: network layout, one of :data:`LAYOUTS`.
      large_feature_map: the reference's ``large_feature_map`` (backbone-specific strides).
      adl_positions: ADL position codes (validated against the spec's ``adl_codes``).
      adl_drop_rate, adl_gamma: ADL hyper-parameters.
      dtype: compute dtype of convolutions.
      conv_impl: "auto" | "explicit" | "xla" (``layers.conv2d``).
      axis_name: BatchNorm sync axis in training (None = none).
      width: base channel count of backbones that have one (digits_cnn; None = the
        backbone's default).
      backbone_options: ``((name, value), ...)``: the options of ``BackboneSpec.options``
        beyond ``width`` (e.g. DeiT's ``head``, ``patch_size``), sorted by name.
      activation: the trunk's and neck's ReLU, ``x -> relu(x)`` (default ``nn.relu``); a
        function with the same forward and another gradient (guided backpropagation's,
        ``maps.posthoc.guided``) changes the backward pass without new parameters.
    """
    layout: str = "cam"
    large_feature_map: bool = False
    adl_positions: Tuple[str, ...] = ()
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    axis_name: Optional[str] = None
    width: Optional[int] = None
    backbone_options: Tuple[Tuple[str, Any], ...] = ()
    activation: Callable[[Any], Any] = nn.relu


def _never_new(top: str, layout: str) -> bool:  # pylint: disable=unused-argument
    return False


def _gap_logits(opts: TrunkOptions) -> bool:  # pylint: disable=unused-argument
    return True


def _no_check(options: Dict[str, Any]) -> None:  # pylint: disable=unused-argument
    return None


# torchvision's initialiser of a classifier's Dense kernel, N(0, 0.01^2).
DEFAULT_HEAD_INIT = nn.initializers.normal(0.01)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A backbone as the methods see it (module docstring).

    Attributes:
      name: model name for ``models.create`` ("vgg16_gap", "resnet50", "inception_v3", ...).
      layouts: the network layouts it offers (subset of :data:`LAYOUTS`).
      trunk: ``trunk(x, train, opts) -> (features, taps)``.
      neck: ``neck(x, train, opts) -> features`` for the class head.
      adl_codes: ``adl_codes(large_feature_map) -> tuple`` of valid ADL position codes.
      adl_default: the reference's ADL positions (the default of the "adl" layout).
      spg_b_width: channels of SPG_B_1a / SPG_B_2a / SPG_B_shared's 3x3 convs.
      spg_c_width: channels of SPG_C's 3x3 conv.
      acol_width: channels of each ACoL classifier's two 3x3 convs.
      is_new_layer: ``(top-level parameter name, layout) -> bool``: the layers trained
        at ``lr_ratio`` x the base learning rate (the reference's feature / classifier split).
      large_feature_map_ok: whether ``large_feature_map=True`` is defined.
      head_init: initialiser of the GAP head's Dense kernel (torchvision's N(0, 0.01^2); a
        backbone trained from scratch may prefer LeCun normal).
      options: ``models.create`` options of this backbone beyond the common ones (digits_cnn:
        ``width``).
      head_widths: optional ``opts -> (acol_width, spg_b_width, spg_c_width)`` for backbones
        whose width is an option (digits_cnn: all three are 4 x ``opts.width``); when given it
        replaces the three fixed widths above (:func:`head_widths`).
      head: optional ``head(features, taps, num_classes, opts) -> logits [B, M]``, built in the
        network's scope (named ``head``, ...), replacing the GAP + Dense head of a network
        without a method head (DeiT's class-token head); None = GAP + Dense ``head``.
      gap_logits: ``opts -> bool``: whether the logits are ``mean(features) @ head + bias``
        (what CAMs and the post-hoc layer "features" assume; default True).
      check_options: ``options -> None``: validates the values of ``options`` (ValueError
        naming the option).
    """
    name: str
    layouts: Tuple[str, ...]
    trunk: Callable[..., Tuple[Any, Dict[str, Any]]]
    neck: Callable[..., Any]
    adl_codes: Callable[[bool], Tuple[str, ...]]
    adl_default: str = ""
    spg_b_width: int = 512
    spg_c_width: int = 512
    acol_width: int = 1024
    is_new_layer: Callable[[str, str], bool] = _never_new
    large_feature_map_ok: bool = True
    head_widths: Optional[Callable[[TrunkOptions], Tuple[int, int, int]]] = None
    head_init: Callable[..., Any] = DEFAULT_HEAD_INIT
    options: Tuple[str, ...] = ()
    head: Optional[Callable[..., Any]] = None
    gap_logits: Callable[[TrunkOptions], bool] = _gap_logits
    check_options: Callable[[Dict[str, Any]], None] = _no_check


def head_widths(spec: BackboneSpec, opts: TrunkOptions) -> Tuple[int, int, int]:
    """``(acol_width, spg_b_width, spg_c_width)`` of ``spec`` built with ``opts``."""
    if spec.head_widths is not None:
        return tuple(int(w) for w in spec.head_widths(opts))
    return spec.acol_width, spec.spg_b_width, spec.spg_c_width


SPECS: Dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Adds ``spec`` to :data:`SPECS` (by ``spec.name``) and returns it."""
    bad = [m for m in spec.layouts if m not in LAYOUTS]
    if bad:
        raise ValueError(f"spec {spec.name!r}: unknown layouts {bad}; valid: {', '.join(LAYOUTS)}")
    SPECS[spec.name] = spec
    return spec


def get(name: str) -> BackboneSpec:
    """The registered spec of ``name``; ValueError listing the registered ones otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown backbone {name!r}; backbones with a spec: "
                         f"{', '.join(sorted(SPECS))}")
    return SPECS[name]
