"""A small CNN-GAP for double-digit canvases (28x56x1) and other small single-channel images.

Layout (``width`` = w, default 16): conv1_1(w) - pool - conv2_1(2w) conv2_2(2w) - pool -
conv3_1(4w) - GAP - Dense(M); every conv is 3x3 -> BatchNorm -> ReLU (``bn{b}_{l}``). The final
feature map is H/4 x W/4 (7x14 for 28x56: each digit half keeps a 7x7 area, so left and right
digits can be told apart), 16x16 for 64x64, 24x24 for 96x96; the input size is free. About
33 k parameters and 7.4 M multiply-adds per 28x56 image for w=16 (receptive field 22 pixels).

BatchNorm is there because the network is trained from scratch in a few epochs: without it,
SGD on a label-averaged sigmoid loss sits on the base-rate plateau for epochs. Training needs
``mutable=["batch_stats"]`` as for ResNet50. The head starts from LeCun-normal weights (not
VGG's N(0, 0.01^2)) for the same reason.

ADL position codes as for VGG: "11", "1M", "21", "22", "2M", "31".

:data:`DIGITS_SPEC` describes the network (``spec.py``): ``models.create("digits_cnn", M)``
builds it (``models.Network``, the one builder), and ``methods.create_model("digits_cnn", M,
method="acol" | "spg")`` puts a method's head on it:

* trunk: conv1_1 .. conv3_1 as above (BatchNorm + ReLU, same names and initialisation) for
  every method; neck: the identity (as ResNet50's), so ACoL's branches and SPG's class head read
  the conv3_1 output [B, H/4, W/4, 4w].
* SPG taps: ``spg_b1`` = the pool2 output (H/4, 2w channels; the reference's SPG_A_1 output
  after its pool), ``spg_b2`` = the conv3_1 output (H/4, 4w; the end of SPG_A_2). The digits
  CNN has no SPG_A_3 (no extra convs between ``spg_b2`` and the class head).
* head widths, small so the network stays cheap: ACoL's branch convs and SPG's B / C convs
  have 4w channels (64 at w = 16), not the reference's 1024 / 512.
* ``method="adl"`` default positions "2M 31" (the last pool and the last conv, as the
  reference's "3M 43 53" covers the last pool and the last convs of VGG16).
* one learning rate for every layer (trained from scratch; ``is_new_layer`` is always False).
"""
from typing import Any

import flax.linen as nn

from infocam_jax.models import spec as spec_lib
from infocam_jax.models.vgg import conv_stack, position_codes

DEFAULT_WIDTH = 16
DIGITS_POOLS = ("M", "M", None)


def digits_blocks(width: int):
    """Per-block conv channels and pools of the digits CNN for base width ``width``."""
    return ((width,), (2 * width, 2 * width), (4 * width,)), (True, True, False)


def check_width(width: Any) -> int:
    """``width`` as a positive int; ValueError naming ``width`` otherwise."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return width


def _width(opts: spec_lib.TrunkOptions) -> int:
    return DEFAULT_WIDTH if opts.width is None else opts.width


def _digits_trunk(x, train, opts: spec_lib.TrunkOptions):
    """conv1_1 - pool - conv2_1 conv2_2 - pool - conv3_1 (BatchNorm + ReLU each); taps
    ``spg_b1`` = pool2 output, ``spg_b2`` = conv3_1 output."""
    blocks, _ = digits_blocks(_width(opts))
    return conv_stack(x.astype(opts.dtype), train, blocks, DIGITS_POOLS,
                      adl_positions=opts.adl_positions, adl_drop_rate=opts.adl_drop_rate,
                      adl_gamma=opts.adl_gamma, dtype=opts.dtype, conv_impl=opts.conv_impl,
                      batch_norm=True, axis_name=opts.axis_name,
                      taps={"spg_b1": "2M", "spg_b2": "31"}, activation=opts.activation)


def _identity_neck(x, train, opts):  # pylint: disable=unused-argument
    return x


def _digits_adl_codes(large: bool):  # pylint: disable=unused-argument
    blocks, pools = digits_blocks(DEFAULT_WIDTH)
    return position_codes(blocks, pools)


def _digits_head_widths(opts: spec_lib.TrunkOptions):
    w = 4 * _width(opts)
    return w, w, w


DIGITS_SPEC = spec_lib.register(spec_lib.BackboneSpec(
    name="digits_cnn", layouts=spec_lib.LAYOUTS, trunk=_digits_trunk,
    neck=_identity_neck, adl_codes=_digits_adl_codes, adl_default="2M 31",
    spg_b_width=4 * DEFAULT_WIDTH, spg_c_width=4 * DEFAULT_WIDTH,
    acol_width=4 * DEFAULT_WIDTH, large_feature_map_ok=False,
    head_widths=_digits_head_widths, head_init=nn.initializers.lecun_normal(),
    options=("width",)))
