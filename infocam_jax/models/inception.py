"""InceptionV3 for WSOL (the WSOL benchmark's variant) as a backbone spec: stem, Mixed_5b-5d,
Mixed_6a with stride 1, Mixed_6b-6e; per method a neck (two 3x3 convolutions with dropout, or
nothing) and the method's head (``models.Network``).

Build it with ``models.create("inception_v3", M, method=..., large_feature_map=...)``.
Shapes for a 224x224 input (torch's ``ceil_mode`` pools)::

    Conv2d_1a_3x3 (3x3/2, pad 1) 112 -> Conv2d_2a_3x3 (3x3, pad 0) 110 -> Conv2d_2b_3x3 110
    -> max-pool 3x3/2 pad 1 ceil 56 -> Conv2d_3b_1x1 56 -> Conv2d_4a_3x3 (pad 0) 54
    -> max-pool 3x3/2 pad 1 ceil 28 -> Mixed_5b/5c/5d 28x28x288
    -> [large_feature_map=False: max-pool 3x3/2 pad 0 ceil -> 14x14]
    -> Mixed_6a (3x3 stride 1, pad 1: no downsampling) -> Mixed_6b..6e 28x28x768 (14x14)

In general the stem gives h = pool(pool(ceil(H / 2) - 2) - 2) with
``pool(n) = layers.pool_size(n, 3, 2, 1, True)`` (32x48 -> 4x6). Every trunk convolution is
conv (no bias) -> BatchNorm (eps 0.001, torch momentum 0.1 = Flax 0.9) -> ReLU
(``BasicConv2d``).

Necks (:func:`inception_neck`), as the reference's InceptionCam / InceptionAdl / InceptionSpg /
InceptionAcol:

* cam (and has / cutmix) and spg: dropout -> A3_1b (3x3, 768 -> 1024, bias) + ReLU -> dropout
  -> A3_2b (3x3, 1024 -> 1024) + ReLU -> dropout: features [B, h, w, 1024]. Dropout p = 0.5,
  the ``"dropout"`` RNG stream, training only; modules ``dropout_A3_1b``, ``dropout_A3_2b``,
  ``dropout_A4`` (what a test intercepts to fix the masks).
* adl: the same without the dropouts (ADL at its positions instead).
* acol: the identity (ACoL's classifiers read Mixed_6e's 768 channels).

The reference's class layer is a 1x1 convolution before the GAP (SPG_A4); a 1x1 convolution
commutes with the average, so GAP then the Dense ``head`` gives the same logits, and
``features @ head.kernel + head.bias`` is its class map.

SPG taps: ``spg_b1`` = Mixed_5d's output (after its ADL, and after the extra pool when
``large_feature_map`` is False), ``spg_b2`` = Mixed_6d's output (not 6e: the reference's
SPG_B_2a reads the map entering Mixed_6e). SPG_C reads the neck output (after the third
dropout).

Parameter names follow torchvision's InceptionV3 and are the same for every method
(``convert.py`` maps torchvision keys onto them): top-level ``Conv2d_1a_3x3``, ...,
``Mixed_6e`` with their torchvision children (``branch1x1``, ``branch5x5_1``, ...,
``branch_pool``), each a ``conv`` (``kernel``) and a ``bn`` (``scale``, ``bias``;
``batch_stats`` ``mean``, ``var``); the neck ``A3_1b``, ``A3_2b`` (``kernel``, ``bias``; the
reference's SPG_A3_1b.0 / SPG_A3_2b.0); then ``head`` (cam / adl), ``acol`` or ``spg``.

ADL position codes: ``"5b" .. "5d"``, ``"6a" .. "6e"`` after that Mixed block, ``"A3_1b"`` and
``"A3_2b"`` after that neck convolution (+ ReLU). The reference's InceptionAdl uses
``"5d 6e A3_2b"`` (:data:`ADL_POSITIONS`, the default of ``method="adl"``).

Learning rates: the reference trains ``Conv2d_*`` and ``Mixed_*`` at the base rate and every
other layer (neck, heads) at ``lr_ratio`` x (``models.new_layer_mask``).
"""
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.models import adl as adl_lib
from infocam_jax.models import spec as spec_lib
from infocam_jax.models.layers import Conv, avg_pool, max_pool

BN_EPSILON = 1e-3  # torchvision / WSOL InceptionV3 BatchNorm
HEAD_DROPOUT = 0.5
HEAD_WIDTH = 1024
# (name, kind, option): InceptionA's pool_features, InceptionC's channels_7x7.
MIXED_BLOCKS = (("Mixed_5b", "A", 32), ("Mixed_5c", "A", 64), ("Mixed_5d", "A", 64),
                ("Mixed_6a", "B", None), ("Mixed_6b", "C", 128), ("Mixed_6c", "C", 160),
                ("Mixed_6d", "C", 160), ("Mixed_6e", "C", 192))
TRUNK_CHANNELS = 768  # Mixed_6e output
STEM_UNITS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1",
              "Conv2d_4a_3x3")
# The BasicConv2d children of each Mixed block kind (torchvision names).
BLOCK_UNITS = {
    "A": ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3", "branch_pool"),
    "B": ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
    "C": ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
          "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5",
          "branch_pool"),
}
NECK_CONVS = ("A3_1b", "A3_2b")
POSITION_CODES = tuple(name[len("Mixed_"):] for name, _, _ in MIXED_BLOCKS) + NECK_CONVS
# The reference's InceptionAdl positions.
ADL_POSITIONS = "5d 6e A3_2b"
# Top-level parameter names the reference trains at the base learning rate (its
# _FEATURE_PARAM_LAYER_PATTERNS for inception: "Mixed", "Conv2d_1" .. "Conv2d_4").
FEATURE_PREFIXES = ("Mixed", "Conv2d_1", "Conv2d_2", "Conv2d_3", "Conv2d_4")
# The reference's initialize_weights(..., 'xavier') for every convolution.
_INIT = nn.initializers.xavier_uniform()


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 0.001) -> ReLU; torch's default padding 0.

    Attributes:
      features: output channels.
      kernel_size: k or (kh, kw).
      strides: stride.
      padding: zero padding, int or (rows, columns).
    """
    features: int
    kernel_size: Any
    strides: int = 1
    padding: Any = 0
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    activation: Any = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(self.features, self.kernel_size, self.strides, use_bias=False,
                 dtype=self.dtype, kernel_init=_INIT, impl=self.conv_impl,
                 padding=self.padding, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BN_EPSILON,
                         axis_name=self.axis_name if train else None, dtype=self.dtype,
                         name="bn")(x)
        return self.activation(x)


class _Block(nn.Module):
    """Shared plumbing of the Mixed blocks: ``self.unit(name, c, k, ...)`` builds a BasicConv2d."""
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    activation: Any = nn.relu

    def unit(self, name, features, kernel_size, strides=1, padding=0):
        return BasicConv2d(features, kernel_size, strides, padding, self.axis_name, self.dtype,
                           self.conv_impl, self.activation, name=name)


class InceptionA(_Block):
    """1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool 3x3 -> 1x1 (``pool_features``);
    output channels 64 + 64 + 96 + pool_features, same spatial size."""
    pool_features: int = 32

    @nn.compact
    def __call__(self, x, train: bool):
        b1 = self.unit("branch1x1", 64, 1)(x, train)
        b5 = self.unit("branch5x5_1", 48, 1)(x, train)
        b5 = self.unit("branch5x5_2", 64, 5, padding=2)(b5, train)
        b3 = self.unit("branch3x3dbl_1", 64, 1)(x, train)
        b3 = self.unit("branch3x3dbl_2", 96, 3, padding=1)(b3, train)
        b3 = self.unit("branch3x3dbl_3", 96, 3, padding=1)(b3, train)
        bp = self.unit("branch_pool", self.pool_features, 1)(avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """3x3 (384) | 1x1 -> 3x3 -> 3x3 (96) | max-pool 3x3; the WSOL Mixed_6a uses stride 1 and
    padding 1 (torchvision: stride 2, padding 0). Output 384 + 96 + C_in channels."""
    strides: int = 1
    padding: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        b3 = self.unit("branch3x3", 384, 3, self.strides, self.padding)(x, train)
        bd = self.unit("branch3x3dbl_1", 64, 1)(x, train)
        bd = self.unit("branch3x3dbl_2", 96, 3, padding=1)(bd, train)
        bd = self.unit("branch3x3dbl_3", 96, 3, self.strides, self.padding)(bd, train)
        # The reference pools with padding 1 whatever the convolutions' padding.
        bp = max_pool(x, 3, self.strides, 1, impl=self.conv_impl)
        return jnp.concatenate([b3, bd, bp.astype(b3.dtype)], axis=-1)


class InceptionC(_Block):
    """Factorised 7x7: 1x1 (192) | 1x1 -> 1x7 -> 7x1 (192) | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 (192)
    | avg-pool 3x3 -> 1x1 (192); ``channels_7x7`` inner channels; 768 output channels."""
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x, train: bool):
        c7 = self.channels_7x7
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding)
        b1 = self.unit("branch1x1", 192, 1)(x, train)
        b7 = self.unit("branch7x7_1", c7, 1)(x, train)
        b7 = self.unit("branch7x7_2", c7, row[0], padding=row[1])(b7, train)
        b7 = self.unit("branch7x7_3", 192, col[0], padding=col[1])(b7, train)
        bd = self.unit("branch7x7dbl_1", c7, 1)(x, train)
        for i, ((k, p), c) in enumerate(zip((col, row, col, row), (c7, c7, c7, 192)), start=2):
            bd = self.unit(f"branch7x7dbl_{i}", c, k, padding=p)(bd, train)
        bp = self.unit("branch_pool", 192, 1)(avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


def inception_trunk(images: jax.Array, train: bool, opts: spec_lib.TrunkOptions
                    ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Stem and Mixed_5b .. Mixed_6e in the CALLING module's scope (call inside ``nn.compact``).

    Args:
      images: [B, H, W, C].
      train: BatchNorm batch statistics and ADL.
      opts: ``large_feature_map`` (False: the extra 3x3/2 ceil-mode pool after Mixed_5d), ADL,
        dtype, conv_impl, axis_name.

    Returns:
      (Mixed_6e's output [B, h, w, 768] in the compute dtype, taps {"spg_b1": Mixed_5d's output
      (+ ADL, + the extra pool) [B, h, w, 288], "spg_b2": Mixed_6d's output [B, h, w, 768]}).
    """
    def unit(name, features, k, strides=1, padding=0):
        return BasicConv2d(features, k, strides, padding, opts.axis_name, opts.dtype,
                           opts.conv_impl, opts.activation, name=name)

    def adl(x, code):
        if code in opts.adl_positions:
            x = adl_lib.ADL(opts.adl_drop_rate, opts.adl_gamma, name=f"adl_{code}")(x, train)
        return x

    x = images.astype(opts.dtype)
    x = unit("Conv2d_1a_3x3", 32, 3, 2, 1)(x, train)
    x = unit("Conv2d_2a_3x3", 32, 3)(x, train)
    x = unit("Conv2d_2b_3x3", 64, 3, padding=1)(x, train)
    x = max_pool(x, 3, 2, 1, impl=opts.conv_impl, ceil_mode=True)
    x = unit("Conv2d_3b_1x1", 80, 1)(x, train)
    x = unit("Conv2d_4a_3x3", 192, 3)(x, train)
    x = max_pool(x, 3, 2, 1, impl=opts.conv_impl, ceil_mode=True)
    common = dict(axis_name=opts.axis_name, dtype=opts.dtype, conv_impl=opts.conv_impl,
                  activation=opts.activation)
    taps = {}
    for name, kind, option in MIXED_BLOCKS:
        if kind == "A":
            block = InceptionA(pool_features=option, name=name, **common)
        elif kind == "B":
            block = InceptionB(strides=1, padding=1, name=name, **common)
        else:
            block = InceptionC(channels_7x7=option, name=name, **common)
        x = adl(block(x, train), name[len("Mixed_"):])
        if name == "Mixed_5d":
            if not opts.large_feature_map:
                x = max_pool(x, 3, 2, 0, impl=opts.conv_impl, ceil_mode=True)
            taps["spg_b1"] = x
        elif name == "Mixed_6d":
            taps["spg_b2"] = x
    return x, taps


def inception_neck(x: jax.Array, train: bool, opts: spec_lib.TrunkOptions) -> jax.Array:
    """The method's neck (module docstring), in the CALLING module's scope.

    Args:
      x: Mixed_6e's output [B, h, w, 768].
      train: dropout / ADL active.
      opts: ``layout`` ("erasing": identity; "adl": no dropout), ADL, dtype, conv_impl.

    Returns:
      [B, h, w, 1024] ("erasing": x unchanged, 768 channels).
    """
    if opts.layout == "erasing":
        return x
    dropout = opts.layout != "adl"

    def drop(x, name):
        if not dropout:
            return x
        return nn.Dropout(HEAD_DROPOUT, deterministic=not train, name=f"dropout_{name}")(x)

    for name in NECK_CONVS:
        x = drop(x, name)
        x = opts.activation(Conv(HEAD_WIDTH, 3, dtype=opts.dtype, impl=opts.conv_impl,
                         kernel_init=_INIT, name=name)(x))
        if name in opts.adl_positions:
            x = adl_lib.ADL(opts.adl_drop_rate, opts.adl_gamma, name=f"adl_{name}")(x, train)
    return drop(x, "A4")


def _inception_adl_codes(large: bool) -> Tuple[str, ...]:  # pylint: disable=unused-argument
    return POSITION_CODES


def _inception_is_new(top: str, layout: str) -> bool:  # pylint: disable=unused-argument
    """Everything but the stem convolutions and the Mixed blocks trains at lr_ratio x."""
    return not top.startswith(FEATURE_PREFIXES)


INCEPTION_V3_SPEC = spec_lib.register(spec_lib.BackboneSpec(
    name="inception_v3", layouts=spec_lib.LAYOUTS, trunk=inception_trunk,
    neck=inception_neck, adl_codes=_inception_adl_codes, adl_default=ADL_POSITIONS,
    spg_b_width=512, spg_c_width=512, acol_width=1024, is_new_layer=_inception_is_new))
