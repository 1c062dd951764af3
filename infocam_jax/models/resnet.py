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

ADL position codes: ``"{L}{i}"`` = after block i of layer L (e.g. the authors' "30 40 42",
also the reference WSOL evaluation's ADL positions).

``large_feature_map=True`` (the reference's option) gives layer3 stride 1: 28x28 features at 224.

:data:`RESNET50_SPEC` describes the backbone for the methods (``spec.py``): the trunk is the
stem and layer1..layer4 for every method, taps ``spg_b1`` after layer3_0 (the reference's
SPG_A1) and ``spg_b2`` after layer3_5 (end of SPG_A2); the neck is the identity.
"""
from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.models import adl as adl_lib
from infocam_jax.models import spec as spec_lib
from infocam_jax.models.layers import Conv, max_pool

RESNET50_LAYERS = (3, 4, 6, 3)
RESNET50_WIDTHS = (64, 128, 256, 512)
RESNET50_STRIDES = (1, 2, 2, 1)  # layer4 stride 1 keeps a 14x14 map at 224
RESNET50_STRIDES_LARGE = (1, 2, 1, 1)  # large_feature_map: layer3 stride 1 too, 28x28
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
    activation: Any = nn.relu

    @nn.compact
    def __call__(self, x, train: bool):
        def conv(features, k, strides, name):
            return Conv(features, k, strides, use_bias=False, dtype=self.dtype,
                        impl=self.conv_impl, name=name)

        def bn(name):
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                axis_name=self.axis_name if train else None, dtype=self.dtype,
                                name=name)

        out = self.activation(bn("bn1")(conv(self.width, 1, 1, "conv1")(x)))
        out = self.activation(bn("bn2")(conv(self.width, 3, self.strides, "conv2")(out)))
        out = bn("bn3")(conv(self.width * EXPANSION, 1, 1, "conv3")(out))
        if self.downsample:
            x = bn("downsample_bn")(conv(self.width * EXPANSION, 1, self.strides,
                                         "downsample_conv")(x))
        return self.activation(out + x)


def resnet_trunk(images: jax.Array, train: bool, opts: spec_lib.TrunkOptions,
                 taps: Optional[Dict[str, str]] = None):
    """Stem + layer1..layer4, built in the CALLING module's scope (call inside ``nn.compact``).

    Args:
      images: [B, H, W, C].
      train: BatchNorm batch statistics and ADL.
      opts: dtype, conv_impl, axis_name, ADL and ``large_feature_map`` (layer3 stride 1).
      taps: {tap name: block code "{L}{i}"}: the block outputs to return (after their ADL).

    Returns:
      (features [B, H/16, W/16, 2048] in the compute dtype (H/8 with large_feature_map),
      {tap name: map}).
    """
    wanted = {code: name for name, code in (taps or {}).items()}
    out = {}
    x = Conv(64, 7, 2, use_bias=False, dtype=opts.dtype, impl=opts.conv_impl,
             name="conv1")(images.astype(opts.dtype))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=opts.axis_name if train else None, dtype=opts.dtype,
                     name="bn1")(x)
    x = opts.activation(x)
    x = max_pool(x, 3, 2, 1, impl=opts.conv_impl)
    strides = RESNET50_STRIDES_LARGE if opts.large_feature_map else RESNET50_STRIDES
    for L, (n, width, stride) in enumerate(zip(RESNET50_LAYERS, RESNET50_WIDTHS, strides),
                                           start=1):
        for i in range(n):
            x = Bottleneck(width, stride if i == 0 else 1, i == 0, opts.axis_name,
                           opts.dtype, opts.conv_impl, opts.activation,
                           name=f"layer{L}_{i}")(x, train)
            code = f"{L}{i}"
            if code in opts.adl_positions:
                x = adl_lib.ADL(opts.adl_drop_rate, opts.adl_gamma, name=f"adl_{code}")(x, train)
            if code in wanted:
                out[wanted[code]] = x
    return x, out


# --------------------------------------------------------------------------------------------
# The spec the methods read (spec.py)
# --------------------------------------------------------------------------------------------
def _resnet_trunk(x, train, opts: spec_lib.TrunkOptions):
    return resnet_trunk(x, train, opts, taps={"spg_b1": "30", "spg_b2": "35"})


def _identity_neck(x, train, opts):  # pylint: disable=unused-argument
    return x


def _resnet_is_new(top: str, layout: str) -> bool:  # pylint: disable=unused-argument
    """The reference trains ``layer4.*`` and ``fc.*`` at lr_ratio x and everything else (ACoL
    and SPG heads included) at the base rate."""
    return top == "head" or top.startswith("layer4_")


RESNET50_SPEC = spec_lib.register(spec_lib.BackboneSpec(
    name="resnet50", layouts=spec_lib.LAYOUTS, trunk=_resnet_trunk,
    neck=_identity_neck, adl_codes=lambda large: POSITION_CODES, adl_default="30 40 42",
    spg_b_width=1024, spg_c_width=512, acol_width=1024, is_new_layer=_resnet_is_new))
