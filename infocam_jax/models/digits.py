"""A small CNN-GAP for double-digit canvases (28x56x1) and other small single-channel images.

Layout (``width`` = w, default 16): conv1_1(w) - pool - conv2_1(2w) conv2_2(2w) - pool -
conv3_1(4w) conv3_2(4w) - GAP - Dense(M). All convs are 3x3 + ReLU, no BatchNorm. The final
feature map is H/4 x W/4 (7x14 for 28x56: each digit half keeps a 7x7 area, so left and right
digits can be told apart), 16x16 for 64x64, 24x24 for 96x96; the input size is free.
About 0.07 M parameters for w=16, ~11 M multiply-adds per 28x56 image.

ADL position codes as for VGG: "11", "1M", "21", "22", "2M", "31", "32".
"""
from typing import Any

import jax.numpy as jnp

from infocam_jax.models import adl as adl_lib
from infocam_jax.models.vgg import ConvGAP, position_codes


def digits_blocks(width: int):
    """Per-block conv channels and pools of the digits CNN for base width ``width``."""
    return ((width,), (2 * width, 2 * width), (4 * width, 4 * width)), (True, True, False)


def digits_cnn(num_classes: int, adl_positions: str = "", adl_drop_rate: float = 0.75,
               adl_gamma: float = 0.9, dtype: Any = jnp.float32, width: int = 16) -> ConvGAP:
    """The digits CNN-GAP; returns ``(logits [B, M], features [B, H/4, W/4, 4*width])``."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    adl_lib.check_rates(adl_drop_rate, adl_gamma)
    blocks, pools = digits_blocks(width)
    codes = adl_lib.parse_positions(adl_positions, position_codes(blocks, pools), "digits_cnn")
    return ConvGAP(num_classes, blocks, pools, 0, codes, adl_drop_rate, adl_gamma, dtype)
