"""ResNet50 for WSOL: torchvision bottleneck layout, layer4 with stride 1, GAP, Dense.

224x224 input -> stem /4 -> layer1 56 -> layer2 28 -> layer3 14 -> layer4 14 (stride 1)
-> [B, 14, 14, 2048] features -> GAP -> Dense. The stride of a downsampling block sits on its
3x3 convolution (torchvision "ResNet v1.5").

BatchNorm uses batch statistics in training (pass ``mutable=["batch_stats"]``; synchronised
over ``axis_name`` when given, e.g. inside ``pmap``) and the running averages at evaluation.
Flax's ``momentum=0.9`` equals torch's ``momentum=0.1``; one difference remains: torch updates
the running variance with the unbiased batch variance, Flax with the biased one.

Parameter names (stable; ``convert.py`` maps torchvision keys onto them): ``conv1``, ``bn1``,
``layer{L}_{i}`` with ``conv1..3``, ``bn1..3`` and (first block of a layer)
``downsample_conv``, ``downsample_bn``; ``head``.

ADL position codes: ``"{L}{i}"`` = after block i of layer L (e.g. the authors' "30 40 42").
"""
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.models import adl as adl_lib
from infocam_jax.models.layers import Conv, max_pool

RESNET50_LAYERS = (3, 4, 6, 3)
RESNET50_WIDTHS = (64, 128, 256, 512)
RESNET50_STRIDES = (1, 2, 2, 1)  # layer4 stride 1 keeps a 14x14 map at 224
EXPANSION = 4
POSITION_CODES = tuple(f"{L}{i}" for L, n in enumerate(RESNET50_LAYERS, start=1)
                       for i in range(n))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4 channels) with identity or projection shortcut."""
    width: int
    strides: int
    downsample: bool
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x, train: bool):
        def conv(features, k, strides, name):
            return Conv(features, k, strides, use_bias=False, dtype=self.dtype,
                        impl=self.conv_impl, name=name)

        def bn(name):
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                axis_name=self.axis_name if train else None, dtype=self.dtype,
                                name=name)

        out = nn.relu(bn("bn1")(conv(self.width, 1, 1, "conv1")(x)))
        out = nn.relu(bn("bn2")(conv(self.width, 3, self.strides, "conv2")(out)))
        out = bn("bn3")(conv(self.width * EXPANSION, 1, 1, "conv3")(out))
        if self.downsample:
            x = bn("downsample_bn")(conv(self.width * EXPANSION, 1, self.strides,
                                         "downsample_conv")(x))
        return nn.relu(out + x)


class ResNet50(nn.Module):
    """ResNet50 with layer4 stride 1 and a GAP + Dense head.

    Attributes:
      num_classes: M.
      adl_positions: ADL position codes (module docstring).
      adl_drop_rate: ADL drop-mask probability.
      adl_gamma: ADL drop threshold.
      axis_name: pmap/shard_map axis over which training BatchNorm statistics are averaged.
      dtype: compute dtype; parameters and outputs are float32.
      conv_impl: "auto", "explicit" or "xla" (see ``layers.conv2d``; same values, different
        speed).
    """
    num_classes: int
    adl_positions: Tuple[str, ...] = ()
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False):
        """Forward pass.

        Args:
          images: [B, H, W, C] float32 NHWC.
          train: training mode: BatchNorm batch statistics (``mutable=["batch_stats"]``) and
            ADL (``rngs={"adl": key}``).

        Returns:
          (logits [B, M] float32, features [B, H/16, W/16, 2048] float32), ``features`` being
          the map GAP consumes (for H, W multiples of 16).
        """
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        x = Conv(64, 7, 2, use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                 name="conv1")(images.astype(self.dtype))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         axis_name=self.axis_name if train else None, dtype=self.dtype,
                         name="bn1")(x)
        x = nn.relu(x)
        x = max_pool(x, 3, 2, 1, impl=self.conv_impl)
        for L, (n, width, stride) in enumerate(
                zip(RESNET50_LAYERS, RESNET50_WIDTHS, RESNET50_STRIDES), start=1):
            for i in range(n):
                x = Bottleneck(width, stride if i == 0 else 1, i == 0, self.axis_name,
                               self.dtype, self.conv_impl, name=f"layer{L}_{i}")(x, train)
                if f"{L}{i}" in self.adl_positions:
                    x = adl_lib.ADL(self.adl_drop_rate, self.adl_gamma,
                                    name=f"adl_{L}{i}")(x, train)
        features = x.astype(jnp.float32)
        pooled = jnp.mean(features, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="head",
                          kernel_init=nn.initializers.normal(0.01))(pooled)
        return logits, features


def resnet50(num_classes: int, adl_positions: str = "", adl_drop_rate: float = 0.75,
             adl_gamma: float = 0.9, axis_name: Optional[str] = None,
             dtype: Any = jnp.float32, conv_impl: str = "auto") -> ResNet50:
    """ResNet50-WSOL for ``num_classes`` classes; see :class:`ResNet50`."""
    adl_lib.check_rates(adl_drop_rate, adl_gamma)
    codes = adl_lib.parse_positions(adl_positions, POSITION_CODES, "resnet50")
    return ResNet50(num_classes, codes, adl_drop_rate, adl_gamma, axis_name, dtype, conv_impl)
