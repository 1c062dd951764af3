"""Backbone specs: what a backbone gives the WSOL methods, so a method is one module.

A backbone is described by a :class:`BackboneSpec`. Its ``trunk`` and ``neck`` are plain
functions called inside the network's ``@nn.compact __call__``
(:class:`infocam_jax.methods.network.WSOLNet`): they create their submodules (``Conv``,
``BatchNorm``, ``ADL``, ...) with explicit names in the caller's scope, so a backbone's parameter
names are flat and the same for every method (``conv4_1``, ``layer3_0``, ...) and one torchvision
key map serves all methods.

* ``trunk(x, train, opts) -> (features [B, h, w, C], taps)``: the feature extractor.
  ``taps`` maps tap names to intermediate maps; SPG reads ``"spg_b1"`` (input of SPG_B_1a) and
  ``"spg_b2"`` (input of SPG_B_2a). ``opts.method`` lets a trunk take the per-method variants the
  reference WSOL evaluation hard-wires (e.g. VGG-ACoL's 3x3 pools).
* ``neck(x, train, opts) -> features [B, h, w, K]``: what the class head reads (VGG's conv6
  for CAM, SPG's extra convs, ACoL's 3x3 average pool, or the identity).
* a method head (GAP + Dense for CAM/ADL, ``acol.AcolHead``, ``spg.SpgHead``) follows.

ADL position codes may lie in the trunk or the neck; ``adl_codes(large_feature_map)`` lists
them all in network order and ``adl_default`` is the reference's choice for ``method="adl"``.
"""
import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import jax.numpy as jnp

NETWORK_METHODS = ("cam", "adl", "acol", "spg")
# Training-only methods build the CAM network; ``network_method`` maps them.
METHODS = ("cam", "adl", "has", "acol", "spg", "cutmix")
_TRAINING_ONLY = {"has": "cam", "cutmix": "cam"}


def network_method(method: str) -> str:
    """The network a method trains: "has"/"cutmix" -> "cam"; others unchanged.

    Raises:
      ValueError: ``method`` not in :data:`METHODS`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return _TRAINING_ONLY.get(method, method)


@dataclasses.dataclass(frozen=True)
class TrunkOptions:
    """What a trunk / neck function needs to build itself.

    Attributes:
      method: network method, one of :data:`NETWORK_METHODS`.
      large_feature_map: the reference's ``large_feature_map`` (backbone-specific strides).
      adl_positions: ADL position codes (validated against the spec's ``adl_codes``).
      adl_drop_rate, adl_gamma: ADL hyper-parameters.
      dtype: compute dtype of convolutions.
      conv_impl: "auto" | "explicit" | "xla" (``layers.conv2d``).
      axis_name: BatchNorm sync axis in training (None = none).
      width: base channel count of backbones that have one (digits_cnn; None = the
        backbone's default).
    """
    method: str = "cam"
    large_feature_map: bool = False
    adl_positions: Tuple[str, ...] = ()
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    axis_name: Optional[str] = None
    width: Optional[int] = None


def _never_new(top: str, method: str) -> bool:  # pylint: disable=unused-argument
    return False


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A backbone as the methods see it (module docstring).

    Attributes:
      name: model name for ``models.create`` ("vgg16_gap", "resnet50", "inception_v3", ...).
      methods: the network methods it supports (subset of :data:`NETWORK_METHODS`).
      trunk: ``trunk(x, train, opts) -> (features, taps)``.
      neck: ``neck(x, train, opts) -> features`` for the class head.
      adl_codes: ``adl_codes(large_feature_map) -> tuple`` of valid ADL position codes.
      adl_default: the reference's ADL positions (for ``method="adl"``).
      spg_b_width: channels of SPG_B_1a / SPG_B_2a / SPG_B_shared's 3x3 convs.
      spg_c_width: channels of SPG_C's 3x3 conv.
      acol_width: channels of each ACoL classifier's two 3x3 convs.
      is_new_layer: ``(top-level parameter name, network method) -> bool``: the layers trained
        at ``lr_ratio`` x the base learning rate (the reference's feature / classifier split).
      large_feature_map_ok: whether ``large_feature_map=True`` is defined.
      head_widths: optional ``opts -> (acol_width, spg_b_width, spg_c_width)`` for backbones
        whose width is an option (digits_cnn: all three are 4 x ``opts.width``); when given it
        replaces the three fixed widths above (:func:`head_widths`).
    """
    name: str
    methods: Tuple[str, ...]
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


def head_widths(spec: BackboneSpec, opts: TrunkOptions) -> Tuple[int, int, int]:
    """``(acol_width, spg_b_width, spg_c_width)`` of ``spec`` built with ``opts``."""
    if spec.head_widths is not None:
        return tuple(int(w) for w in spec.head_widths(opts))
    return spec.acol_width, spec.spg_b_width, spec.spg_c_width


SPECS: Dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Adds ``spec`` to :data:`SPECS` (by ``spec.name``) and returns it."""
    bad = [m for m in spec.methods if m not in NETWORK_METHODS]
    if bad:
        raise ValueError(f"spec {spec.name!r}: unknown network methods {bad}; valid: "
                         f"{', '.join(NETWORK_METHODS)}")
    SPECS[spec.name] = spec
    return spec


def get(name: str) -> BackboneSpec:
    """The registered spec of ``name``; ValueError listing the registered ones otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown backbone {name!r}; backbones with a spec: "
                         f"{', '.join(sorted(SPECS))}")
    return SPECS[name]
