"""VGG16-GAP (the WSOL variant): VGG16 configuration D without pool5, conv6, GAP, Dense.

224x224 input -> conv5_3 at 14x14x512 -> conv6 (3x3, 512->1024) + ReLU -> GAP -> Dense.
:func:`conv_stack` also builds the small digits network (``digits.py``).

Parameter names (stable; ``convert.py`` maps torchvision keys onto them):
``conv{b}_{l}`` (block b, layer l), ``conv6``, ``head``; each with ``kernel`` and ``bias``.

ADL position codes: ``"{b}{l}"`` after conv{b}_{l}+ReLU and ``"{b}M"`` after pool{b}
(e.g. the authors' ``"3M 4M 53"``; the reference WSOL evaluation's ADL uses ``"3M 43 53"``).

``large_feature_map=True`` (the reference's option) drops pool4: 28x28 features at 224.

:data:`VGG16_SPEC` describes the backbone for the methods (``spec.py``), following the
reference's per-method VGG variants:

* CAM / ADL: the network above (trunk conv1_1..conv5_3, neck conv6 + ReLU).
* ACoL: every pool is a 3x3 / stride 2 / pad 1 max-pool, except pool4 under
  ``large_feature_map`` and a pool after block 5, which are 3x3 / stride 1 / pad 1 max-pools;
  the neck is a 3x3 / stride 1 / pad 1 average pool (zero padding counted, divisor 9).
* SPG: pools 1-3 as CAM; pool4 is a 3x3 / stride 2 / pad 1 max-pool (none under
  ``large_feature_map``); taps ``spg_b1`` after it (conv4 block = the reference's SPG_A_1) and
  ``spg_b2`` after conv5_3 (SPG_A_2); the neck is two 3x3 512-channel convs + ReLU
  (``spg_a3_1``, ``spg_a3_2``: the reference's SPG_A_3); no conv6.
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.models import adl as adl_lib
from infocam_jax.models import spec as spec_lib
from infocam_jax.models.layers import Conv, max_pool

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_POOLS = (True, True, True, True, False)  # no pool5: keeps a 14x14 map at 224
VGG16_POOLS_LARGE = (True, True, True, False, False)  # large_feature_map: no pool4, 28x28
# Pool kinds of conv_stack: window, stride, padding of a torch-style max-pool.
POOL_KINDS = {"M": (2, 2, 0), "M1": (3, 2, 1), "M2": (3, 1, 1)}
VGG16_CONV6 = 1024


def position_codes(blocks: Sequence[Sequence[int]], pools: Sequence[bool]) -> Tuple[str, ...]:
    """All ADL position codes of a conv stack, in network order."""
    codes = []
    for b, (layers, pool) in enumerate(zip(blocks, pools), start=1):
        codes += [f"{b}{l}" for l in range(1, len(layers) + 1)]
        if pool:
            codes.append(f"{b}M")
    return tuple(codes)


def conv_stack(x: jax.Array, train: bool, blocks: Sequence[Sequence[int]],
               pools: Sequence[Optional[str]], *, adl_positions: Tuple[str, ...] = (),
               adl_drop_rate: float = 0.75, adl_gamma: float = 0.9, dtype: Any = jnp.float32,
               conv_impl: str = "auto", conv_init: Any = None, batch_norm: bool = False,
               axis_name: Optional[str] = None,
               taps: Optional[Dict[str, str]] = None,
               activation: Any = nn.relu) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """The VGG conv stack, built in the CALLING module's scope (call inside ``nn.compact``).

    Block b: conv{b}_{l} (3x3, pad 1) [+ bn{b}_{l}] + ReLU [+ ADL "{b}{l}"] for each l, then the
    pool ``pools[b-1]`` (None, or a :data:`POOL_KINDS` key) [+ ADL "{b}M"].

    Args:
      x: [B, H, W, C] input in the compute dtype.
      train: training mode (ADL, BatchNorm statistics).
      blocks: output channels of each conv, grouped by block.
      pools: pool kind closing each block (None = no pool).
      adl_positions: ADL position codes; adl_drop_rate, adl_gamma: ADL's.
      dtype, conv_impl: compute dtype and convolution implementation (``layers.conv2d``).
      conv_init: conv kernel initialiser (default He-normal on fan-out).
      batch_norm: BatchNorm (``bn{b}_{l}``) between each conv and its ReLU.
      axis_name: BatchNorm sync axis in training (only with ``batch_norm``).
      taps: {tap name: position code} of maps to return ("{b}{l}" or "{b}M": the map at that
        point, after its ADL if any).

    Returns:
      (x [B, h, w, blocks[-1][-1]], {tap name: map}).
    """
    conv_init = conv_init or nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    wanted = {code: name for name, code in (taps or {}).items()}
    out = {}

    def after(x, code):
        if code in adl_positions:
            x = adl_lib.ADL(adl_drop_rate, adl_gamma, name=f"adl_{code}")(x, train)
        if code in wanted:
            out[wanted[code]] = x
        return x

    for b, (layers, pool) in enumerate(zip(blocks, pools), start=1):
        for l, channels in enumerate(layers, start=1):
            x = Conv(channels, 3, use_bias=not batch_norm, dtype=dtype, impl=conv_impl,
                     kernel_init=conv_init, name=f"conv{b}_{l}")(x)
            if batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 axis_name=axis_name if train else None, dtype=dtype,
                                 name=f"bn{b}_{l}")(x)
            x = after(activation(x), f"{b}{l}")
        if pool is not None:
            window, stride, padding = POOL_KINDS[pool]
            x = after(max_pool(x, window, stride, padding, impl=conv_impl), f"{b}M")
    return x, out


# --------------------------------------------------------------------------------------------
# The spec the methods read (spec.py)
# --------------------------------------------------------------------------------------------
def _vgg_pools(layout: str, large: bool) -> Tuple[Optional[str], ...]:
    if layout == "erasing":
        return ("M1", "M1", "M1", "M2" if large else "M1", "M2")
    if layout == "guidance":
        return ("M", "M", "M", None if large else "M1", None)
    return ("M", "M", "M", None if large else "M", None)


def _vgg_trunk(x, train, opts: spec_lib.TrunkOptions):
    """conv1_1 .. conv5_3 with the method's pools; SPG taps after block 4 (+pool) and 5."""
    taps = {"spg_b1": "4M" if opts.layout == "guidance" and not opts.large_feature_map else "43",
            "spg_b2": "53"}
    return conv_stack(x.astype(opts.dtype), train, VGG16_BLOCKS,
                      _vgg_pools(opts.layout, opts.large_feature_map),
                      adl_positions=opts.adl_positions, adl_drop_rate=opts.adl_drop_rate,
                      adl_gamma=opts.adl_gamma, dtype=opts.dtype, conv_impl=opts.conv_impl,
                      taps=taps, activation=opts.activation)


def avg_pool3_count_pad(x: jax.Array) -> jax.Array:
    """3x3 / stride 1 / zero-pad 1 average pool dividing by 9 everywhere (torch's
    ``avg_pool2d(x, 3, 1, 1)`` with ``count_include_pad=True``). [B,h,w,C] -> same shape."""
    summed = jax.lax.reduce_window(x, jnp.array(0, x.dtype), jax.lax.add, (1, 3, 3, 1),
                                   (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
    return summed / jnp.array(9, x.dtype)


def _vgg_neck(x, train, opts: spec_lib.TrunkOptions):  # pylint: disable=unused-argument
    """CAM/ADL: conv6 (1024) + ReLU; ACoL: 3x3 average pool; SPG: spg_a3_1, spg_a3_2 (512)."""
    if opts.layout == "erasing":
        return avg_pool3_count_pad(x)
    if opts.layout == "guidance":
        for i in (1, 2):
            x = opts.activation(Conv(512, 3, dtype=opts.dtype, impl=opts.conv_impl,
                             name=f"spg_a3_{i}")(x))
        return x
    return opts.activation(Conv(VGG16_CONV6, 3, dtype=opts.dtype, impl=opts.conv_impl,
                        name="conv6")(x))


def _vgg_adl_codes(large: bool) -> Tuple[str, ...]:
    return position_codes(VGG16_BLOCKS, VGG16_POOLS_LARGE if large else VGG16_POOLS)


def _vgg_is_new(top: str, layout: str) -> bool:  # pylint: disable=unused-argument
    """The reference trains its ``features.*`` (conv1_1..conv5_3) at the base rate, all else
    (conv6, head, ACoL/SPG heads) at lr_ratio x. Its VGG-SPG keeps conv4/conv5 outside
    ``features`` (as SPG_A_1 / SPG_A_2), so they get the classifier rate there."""
    is_trunk_conv = top.startswith("conv") and top != "conv6"
    if layout == "guidance" and top.startswith(("conv4_", "conv5_")):
        return True
    return not is_trunk_conv


VGG16_SPEC = spec_lib.register(spec_lib.BackboneSpec(
    name="vgg16_gap", layouts=spec_lib.LAYOUTS, trunk=_vgg_trunk,
    neck=_vgg_neck, adl_codes=_vgg_adl_codes, adl_default="3M 43 53", spg_b_width=512,
    spg_c_width=512, acol_width=1024, is_new_layer=_vgg_is_new))
