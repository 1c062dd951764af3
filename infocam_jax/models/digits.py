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
"""
from typing import Any, Optional

import jax.numpy as jnp

from infocam_jax.models import adl as adl_lib
from infocam_jax.models.vgg import ConvGAP, position_codes


def digits_blocks(width: int):
    """Per-block conv channels and pools of the digits CNN for base width ``width``."""
    return ((width,), (2 * width, 2 * width), (4 * width,)), (True, True, False)


def digits_cnn(num_classes: int, adl_positions: str = "", adl_drop_rate: float = 0.75,
               adl_gamma: float = 0.9, axis_name: Optional[str] = None,
               dtype: Any = jnp.float32, width: int = 16,
               conv_impl: str = "auto") -> ConvGAP:
    """The digits CNN-GAP; returns ``(logits [B, M], features [B, H/4, W/4, 4*width])``."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    adl_lib.check_rates(adl_drop_rate, adl_gamma)
    blocks, pools = digits_blocks(width)
    codes = adl_lib.parse_positions(adl_positions, position_codes(blocks, pools), "digits_cnn")
    return ConvGAP(num_classes, blocks, pools, 0, codes, adl_drop_rate, adl_gamma, dtype,
                   conv_impl, batch_norm=True, axis_name=axis_name, head_std=None)
