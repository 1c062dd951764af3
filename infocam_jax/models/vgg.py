"""VGG16-GAP (the WSOL variant): VGG16 configuration D without pool5, conv6, GAP, Dense.

224x224 input -> conv5_3 at 14x14x512 -> conv6 (3x3, 512->1024) + ReLU -> GAP -> Dense.
The generic :class:`ConvGAP` also builds the small digits network (``digits.py``).

Parameter names (stable; ``convert.py`` maps torchvision keys onto them):
``conv{b}_{l}`` (block b, layer l), ``conv6``, ``head``; each with ``kernel`` and ``bias``.

ADL position codes: ``"{b}{l}"`` after conv{b}_{l}+ReLU and ``"{b}M"`` after pool{b}
(e.g. the authors' ``"3M 4M 53"``).
"""
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.models import adl as adl_lib
from infocam_jax.models.layers import Conv, max_pool

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_POOLS = (True, True, True, True, False)  # no pool5: keeps a 14x14 map at 224
VGG16_CONV6 = 1024


def position_codes(blocks: Sequence[Sequence[int]], pools: Sequence[bool]) -> Tuple[str, ...]:
    """All ADL position codes of a conv stack, in network order."""
    codes = []
    for b, (layers, pool) in enumerate(zip(blocks, pools), start=1):
        codes += [f"{b}{l}" for l in range(1, len(layers) + 1)]
        if pool:
            codes.append(f"{b}M")
    return tuple(codes)


class ConvGAP(nn.Module):
    """Plain conv stack (3x3 conv + ReLU, 2x2 max-pool between blocks), GAP and a Dense head.

    Attributes:
      num_classes: M, outputs of the head.
      blocks: output channels of each conv, grouped by block.
      pools: whether a 2x2/2 max-pool closes each block.
      extra_conv: channels of an extra 3x3 conv + ReLU after the stack (VGG's conv6); 0 = none.
      adl_positions: ADL position codes (see module docstring).
      adl_drop_rate: ADL drop-mask probability.
      adl_gamma: ADL drop threshold.
      dtype: compute dtype; parameters stay float32, outputs are float32.
      conv_impl: "auto", "explicit" or "xla" (see ``layers.conv2d``; same values, different
        speed).
      batch_norm: BatchNorm (``bn{b}_{l}``) between each stack conv and its ReLU.
      axis_name: BatchNorm sync axis in training (only with ``batch_norm``).
      conv_fan: "fan_out" (torchvision's VGG init) or "fan_in" He-normal conv kernels
        ("fan_in" keeps activation scale through a from-scratch network without BatchNorm).
      head_std: the head kernel's initial N(0, std^2) (torchvision's VGG: 0.01); None = LeCun
        normal (std 1/sqrt(K)), which starts a network trained from scratch much faster.
    """
    num_classes: int
    blocks: Tuple[Tuple[int, ...], ...] = VGG16_BLOCKS
    pools: Tuple[bool, ...] = VGG16_POOLS
    extra_conv: int = VGG16_CONV6
    adl_positions: Tuple[str, ...] = ()
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    batch_norm: bool = False
    axis_name: Optional[str] = None
    head_std: Optional[float] = 0.01
    conv_fan: str = "fan_out"

    def _adl(self, x, code, train):
        if code not in self.adl_positions:
            return x
        return adl_lib.ADL(self.adl_drop_rate, self.adl_gamma, name=f"adl_{code}")(x, train)

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False):
        """Forward pass.

        Args:
          images: [B, H, W, C] float32 NHWC.
          train: training mode (ADL active; needs ``rngs={"adl": key}`` when ADL is used).

        Returns:
          (logits [B, M] float32, features [B, h, w, K] float32) where ``features`` is the map
          GAP consumes (h = H / 2^(number of pools)).
        """
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        x = images.astype(self.dtype)
        conv_init = nn.initializers.variance_scaling(2.0, self.conv_fan, "normal")
        for b, (layers, pool) in enumerate(zip(self.blocks, self.pools), start=1):
            for l, channels in enumerate(layers, start=1):
                x = Conv(channels, 3, use_bias=not self.batch_norm, dtype=self.dtype,
                         impl=self.conv_impl, kernel_init=conv_init, name=f"conv{b}_{l}")(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     axis_name=self.axis_name if train else None,
                                     dtype=self.dtype, name=f"bn{b}_{l}")(x)
                x = nn.relu(x)
                x = self._adl(x, f"{b}{l}", train)
            if pool:
                x = max_pool(x, 2, 2, impl=self.conv_impl)
                x = self._adl(x, f"{b}M", train)
        if self.extra_conv:
            x = nn.relu(Conv(self.extra_conv, 3, dtype=self.dtype, impl=self.conv_impl,
                             kernel_init=conv_init, name=f"conv{len(self.blocks) + 1}")(x))
        features = x.astype(jnp.float32)
        pooled = jnp.mean(features, axis=(1, 2))
        head_init = (nn.initializers.lecun_normal() if self.head_std is None
                     else nn.initializers.normal(self.head_std))
        logits = nn.Dense(self.num_classes, name="head", kernel_init=head_init)(pooled)
        return logits, features


def vgg16_gap(num_classes: int, adl_positions: str = "", adl_drop_rate: float = 0.75,
              adl_gamma: float = 0.9, dtype: Any = jnp.float32,
              conv_impl: str = "auto") -> ConvGAP:
    """VGG16-GAP for ``num_classes`` classes; see :class:`ConvGAP`."""
    adl_lib.check_rates(adl_drop_rate, adl_gamma)
    codes = adl_lib.parse_positions(adl_positions, position_codes(VGG16_BLOCKS, VGG16_POOLS),
                                    "vgg16_gap")
    return ConvGAP(num_classes, VGG16_BLOCKS, VGG16_POOLS, VGG16_CONV6, codes, adl_drop_rate,
                   adl_gamma, dtype, conv_impl)
