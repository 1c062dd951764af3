"""InceptionV3 for WSOL (the "large feature map" variant of the WSOL benchmark): stem, Mixed_5b-5d,
Mixed_6a with stride 1, Mixed_6b-6e, a two-convolution head, GAP, a class layer.

Shapes for a 224x224 input (torch's ``ceil_mode`` pools keep the map at 28x28)::

    Conv2d_1a_3x3 (3x3/2, pad 1) 112 -> Conv2d_2a_3x3 (3x3, pad 0) 110 -> Conv2d_2b_3x3 110
    -> max-pool 3x3/2 pad 1 ceil 56 -> Conv2d_3b_1x1 56 -> Conv2d_4a_3x3 (pad 0) 54
    -> max-pool 3x3/2 pad 1 ceil 28 -> Mixed_5b/5c/5d 28x28x288
    -> Mixed_6a (3x3 stride 1, pad 1: no downsampling) -> Mixed_6b..6e 28x28x768
    -> head: [dropout] A3_1b (3x3, 768->1024) + ReLU -> [dropout] A3_2b (3x3) + ReLU
    -> [dropout] -> features [B, 28, 28, 1024] -> GAP -> Dense ``head`` (1024 -> M)

The class layer of the reference network is a 1x1 convolution before the GAP; a 1x1
convolution commutes with the average, so GAP followed by the Dense ``head`` gives the same
logits, and ``features @ head.kernel`` is the class map (the reference's CAM minus the
per-class bias, which min-max normalisation cancels). Every convolution of the trunk is
conv (no bias) -> BatchNorm (eps 0.001, torch momentum 0.1 = Flax 0.9) -> ReLU
(``BasicConv2d``); the head convolutions have biases and no BatchNorm.

Dropout (p = 0.5, the ``'dropout'`` RNG stream, only in training) sits before A3_1b, before
A3_2b and after A3_2b in the CAM network, as the reference's InceptionCam; ``dropout=False``
(the reference's InceptionAdl) removes it.

Parameter names follow torchvision's InceptionV3 (``convert.py`` maps its keys onto them):
``Conv2d_1a_3x3``, ..., ``Mixed_6e`` with their torchvision children (``branch1x1``,
``branch5x5_1``, ..., ``branch_pool``), each a ``conv`` (``kernel``) and a ``bn`` (``scale``,
``bias``; ``batch_stats`` ``mean``, ``var``); the head ``A3_1b``, ``A3_2b`` (``kernel``,
``bias``) and ``head`` (Dense).

ADL position codes: ``"5b" .. "5d"``, ``"6a" .. "6e"`` after that Mixed block, ``"A3_1b"`` and
``"A3_2b"`` after that head convolution (+ ReLU). The reference's InceptionAdl uses
``"5d 6e A3_2b"``.
"""
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.models import adl as adl_lib
from infocam_jax.models.layers import Conv, avg_pool, max_pool

BN_EPSILON = 1e-3  # torchvision / WSOL InceptionV3 BatchNorm
HEAD_DROPOUT = 0.5
HEAD_WIDTH = 1024
# (name, kind, option): InceptionA's pool_features, InceptionC's channels_7x7.
MIXED_BLOCKS = (("Mixed_5b", "A", 32), ("Mixed_5c", "A", 64), ("Mixed_5d", "A", 64),
                ("Mixed_6a", "B", None), ("Mixed_6b", "C", 128), ("Mixed_6c", "C", 160),
                ("Mixed_6d", "C", 160), ("Mixed_6e", "C", 192))
TRUNK_CHANNELS = 768  # Mixed_6e output
POSITION_CODES = tuple(name[len("Mixed_"):] for name, _, _ in MIXED_BLOCKS) + ("A3_1b", "A3_2b")
# The reference's InceptionAdl positions.
ADL_POSITIONS = "5d 6e A3_2b"


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

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = Conv(self.features, self.kernel_size, self.strides, use_bias=False,
                 dtype=self.dtype, impl=self.conv_impl, padding=self.padding, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BN_EPSILON,
                         axis_name=self.axis_name if train else None, dtype=self.dtype,
                         name="bn")(x)
        return nn.relu(x)


class _Block(nn.Module):
    """Shared plumbing of the Mixed blocks: ``self.unit(name, c, k, ...)`` builds a BasicConv2d."""
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    def unit(self, name, features, kernel_size, strides=1, padding=0):
        return BasicConv2d(features, kernel_size, strides, padding, self.axis_name, self.dtype,
                           self.conv_impl, name=name)


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
        b7 = self.unit("branch7x7_2", c7, *row[:1], padding=row[1])(b7, train)
        b7 = self.unit("branch7x7_3", 192, *col[:1], padding=col[1])(b7, train)
        bd = self.unit("branch7x7dbl_1", c7, 1)(x, train)
        for i, ((k, p), c) in enumerate(zip((col, row, col, row), (c7, c7, c7, 192)), start=2):
            bd = self.unit(f"branch7x7dbl_{i}", c, k, padding=p)(bd, train)
        bp = self.unit("branch_pool", 192, 1)(avg_pool(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionTrunk(nn.Module):
    """Stem and Mixed_5b .. Mixed_6e (no head), torchvision names, WSOL strides.

    ``__call__`` returns ``{"5b": ..., ..., "6e": ...}``: every Mixed block's output
    [B, h, w, C] (``dtype``), after the ADL layer at that position when there is one; ``"6e"``
    [B, h, w, 768] is the trunk's output. For a 224 input h = w = 28; in general the stem gives
    h = pool(pool(ceil(H / 2) - 2) - 2) with ``pool(n) = layers.pool_size(n, 3, 2, 1, True)``.
    """
    adl_positions: Tuple[str, ...] = ()
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> Dict[str, jax.Array]:
        def unit(name, features, k, strides=1, padding=0):
            return BasicConv2d(features, k, strides, padding, self.axis_name, self.dtype,
                               self.conv_impl, name=name)

        x = images.astype(self.dtype)
        x = unit("Conv2d_1a_3x3", 32, 3, 2, 1)(x, train)
        x = unit("Conv2d_2a_3x3", 32, 3)(x, train)
        x = unit("Conv2d_2b_3x3", 64, 3, padding=1)(x, train)
        x = max_pool(x, 3, 2, 1, impl=self.conv_impl, ceil_mode=True)
        x = unit("Conv2d_3b_1x1", 80, 1)(x, train)
        x = unit("Conv2d_4a_3x3", 192, 3)(x, train)
        x = max_pool(x, 3, 2, 1, impl=self.conv_impl, ceil_mode=True)
        common = dict(axis_name=self.axis_name, dtype=self.dtype, conv_impl=self.conv_impl)
        taps = {}
        for name, kind, option in MIXED_BLOCKS:
            if kind == "A":
                x = InceptionA(pool_features=option, name=name, **common)(x, train)
            elif kind == "B":
                x = InceptionB(strides=1, padding=1, name=name, **common)(x, train)
            else:
                x = InceptionC(channels_7x7=option, name=name, **common)(x, train)
            code = name[len("Mixed_"):]
            if code in self.adl_positions:
                x = adl_lib.ADL(self.adl_drop_rate, self.adl_gamma, name=f"adl_{code}")(x, train)
            taps[code] = x
        return taps


class InceptionV3(nn.Module):
    """The CAM network (the reference's InceptionCam; ``dropout=False`` its InceptionAdl head).

    Attributes:
      num_classes: M.
      adl_positions: ADL position codes (module docstring).
      adl_drop_rate, adl_gamma: ADL hyper-parameters.
      dropout: the head's three p = 0.5 dropouts in training (``rngs={"dropout": key}``).
      axis_name, dtype, conv_impl: as :class:`~infocam_jax.models.resnet.ResNet50`.
    """
    num_classes: int
    adl_positions: Tuple[str, ...] = ()
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    dropout: bool = True
    axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False):
        """Returns (logits [B, M] float32, features [B, h, w, 1024] float32); see module doc."""
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        x = InceptionTrunk(self.adl_positions, self.adl_drop_rate, self.adl_gamma,
                           self.axis_name, self.dtype, self.conv_impl, name="trunk")(
                               images, train)["6e"]
        init = nn.initializers.xavier_uniform()  # the reference's initialize_weights('xavier')
        for name in ("A3_1b", "A3_2b"):
            if self.dropout:
                x = nn.Dropout(HEAD_DROPOUT, deterministic=not train,
                               name=f"dropout_{name}")(x)
            x = nn.relu(Conv(HEAD_WIDTH, 3, dtype=self.dtype, impl=self.conv_impl,
                             kernel_init=init, name=name)(x))
            if name in self.adl_positions:
                x = adl_lib.ADL(self.adl_drop_rate, self.adl_gamma, name=f"adl_{name}")(x, train)
        if self.dropout:
            x = nn.Dropout(HEAD_DROPOUT, deterministic=not train, name="dropout_A4")(x)
        features = x.astype(jnp.float32)
        logits = nn.Dense(self.num_classes, kernel_init=init, name="head")(
            jnp.mean(features, axis=(1, 2)))
        return logits, features


def inception_v3(num_classes: int, adl_positions: str = "", adl_drop_rate: float = 0.75,
                 adl_gamma: float = 0.9, dropout: bool = True, axis_name: Optional[str] = None,
                 dtype: Any = jnp.float32, conv_impl: str = "auto") -> InceptionV3:
    """InceptionV3-WSOL (CAM head) for ``num_classes`` classes; see :class:`InceptionV3`."""
    adl_lib.check_rates(adl_drop_rate, adl_gamma)
    codes = adl_lib.parse_positions(adl_positions, POSITION_CODES, "inception_v3")
    return InceptionV3(num_classes, codes, adl_drop_rate, adl_gamma, dropout, axis_name, dtype,
                       conv_impl)
