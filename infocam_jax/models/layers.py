"""Building blocks shared by the backbones: convolution and max-pooling with torch-style padding.

Both have an XLA:CPU-tuned path ("explicit") beside plain autodiff ("xla"); "auto" picks the
first on the CPU backend and the second on accelerators. The convolution keeps Flax's parameter layout (``kernel`` HWIO float32, optional ``bias``) so
converted torchvision weights and checkpoints do not depend on how the product is computed.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.models import xla_cpu

# He-normal on fan-out, as torchvision initialises VGG and ResNet convolutions.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pair(value) -> tuple:
    """An int or a pair of ints as a (rows, columns) tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _conv_forward(x: jax.Array, kernel: jax.Array, strides: int, padding) -> jax.Array:
    kh, kw = kernel.shape[:2]
    ph, pw = _pair(padding)
    if kh == kw == 1 and ph == pw == 0:
        # A 1x1 convolution is a matmul over channels; XLA:CPU runs dot_general markedly faster
        # than its generic convolution for this case.
        return jnp.einsum("bhwc,co->bhwo", x[:, ::strides, ::strides], kernel[0, 0])
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(strides, strides),
        padding=((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _kernel_grad(x, g, kernel_shape, strides, padding):
    """dL/dkernel [kh, kw, C, O] from one matmul ``A^T @ G`` that sums over n positions.

    XLA:CPU lowers the kernel gradient of a convolution to a convolution that contracts over
    batch x space; to run it, it transposes the activations to batch-minor layouts, which in a
    whole ResNet50 train step costs more than the products themselves. A materialised matmul
    avoids that, and one matmul with wide operands keeps the GEMM's blocks full where kh*kw
    small ones (one per tap, C or O as small as 3 or 64) would run far below peak.

    Stride 1 (most of VGG and ResNet) shifts rows and columns separately: A is the kh row
    slices of the padded input side by side ([n, kh*C], whole padded rows, n = B*h*Wp) and G
    is ``g`` shifted by each of the kw columns and zero-padded ([n, kw*O]); block (i, j) of
    the [kh*C, kw*O] product is tap (i, j), and the zero columns of the shifted ``g`` drop the
    products that fall outside the window. Strided convolutions take A as the kh*kw strided
    input windows side by side ([n, kh*kw*C], n = B*h*w) and G = ``g`` ([n, O]).

    The sums run over n (hundreds of thousands of terms): products accumulate in float32
    whatever the input dtype (bfloat16 accumulation would lose the gradient's low bits).
    Returns float32.
    """
    kh, kw = kernel_shape
    ph, pw = _pair(padding)
    c, o = x.shape[-1], g.shape[-1]
    b, h, w = g.shape[:3]
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else x
    if strides == 1:
        wp = xp.shape[2]
        rows = jnp.concatenate([jax.lax.slice_in_dim(xp, i, i + h, axis=1) for i in range(kh)],
                               axis=-1).reshape(-1, kh * c)
        shifted = jnp.concatenate([jnp.pad(g, ((0, 0), (0, 0), (j, wp - w - j), (0, 0)))
                                   for j in range(kw)], axis=-1).reshape(-1, kw * o)
        taps = jnp.matmul(rows.T, shifted, preferred_element_type=jnp.float32)
        return jnp.transpose(taps.reshape(kh, c, kw, o), (0, 2, 1, 3))
    windows = [jax.lax.slice(xp, (0, i, j, 0),
                             (b, i + strides * (h - 1) + 1, j + strides * (w - 1) + 1, c),
                             (1, strides, strides, 1))
               for i in range(kh) for j in range(kw)]
    cols = jnp.concatenate(windows, axis=-1).reshape(-1, kh * kw * c)
    taps = jnp.matmul(cols.T, g.reshape(-1, o), preferred_element_type=jnp.float32)
    return taps.reshape(kh, kw, c, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_explicit(x, kernel, strides, padding):
    return _conv_forward(x, kernel, strides, padding)


def _conv_explicit_fwd(x, kernel, strides, padding):
    return _conv_forward(x, kernel, strides, padding), (x, kernel)


def _conv_explicit_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    forward = lambda x, kernel: _conv_forward(x, kernel, strides, padding)
    if _xla_kernel_grad(kernel):
        _, vjp = jax.vjp(forward, x, kernel)
        return vjp(g)
    dx = jax.vjp(lambda x: forward(x, kernel), x)[1](g)[0]
    dkernel = _kernel_grad(x, g, kernel.shape[:2], strides, padding).astype(kernel.dtype)
    return dx, dkernel


def _xla_kernel_grad(kernel) -> bool:
    """Whether XLA's own convolution computes this kernel gradient (decided when traced).

    With convolutions on XLA's Eigen kernels (``xla_cpu.eigen_convolutions_active()``), its
    kernel gradient of a k x k convolution (k > 1) beat the matmul of ``_kernel_grad`` in the
    whole ResNet50 and VGG16 train steps; for 1x1 ones XLA transposes the activations
    batch-minor first, which costs more than the product, and on YNNPACK's convolutions the
    matmul wins everywhere (``benchmarks/conv_layers.py``). bfloat16 keeps the matmul for its
    float32 accumulation.
    """
    return (kernel.shape[0] * kernel.shape[1] > 1 and kernel.dtype == jnp.float32
            and xla_cpu.eigen_convolutions_active())


_conv_explicit.defvjp(_conv_explicit_fwd, _conv_explicit_bwd)

CONV_IMPLS = ("auto", "explicit", "xla")


def resolve_impl(impl: str) -> str:
    """"auto" -> "explicit" on the CPU backend, "xla" on GPU/TPU (where the vendor convolution
    libraries compute kernel gradients well); other values are returned unchanged."""
    if impl == "auto":
        return "explicit" if jax.default_backend() == "cpu" else "xla"
    return impl


def conv2d(x: jax.Array, kernel: jax.Array, strides: int, padding,
           impl: str = "auto") -> jax.Array:
    """NHWC convolution with symmetric zero padding (torch semantics, not XLA 'SAME').

    Args:
      x: [B, H, W, Cin] input.
      kernel: [kh, kw, Cin, Cout] kernel (HWIO), same dtype as ``x`` (InceptionV3 uses 1x7 and
        7x1 kernels).
      strides: spatial stride (same for both axes).
      padding: zero padding on every side: an int, or (rows, columns) like torch's
        ``padding=(ph, pw)``.
      impl: "explicit" (kernel gradient as matmuls, see ``_kernel_grad``), "xla" (plain
        autodiff of the XLA convolution) or "auto" (see :func:`resolve_impl`; decided when
        traced, from ``jax.default_backend()``). All give the same values up to float rounding.

    Returns:
      [B, H', W', Cout] with H' = (H + 2 ph - kh) // s + 1, W' likewise.
    """
    impl = resolve_impl(impl)
    padding = _pair(padding)  # hashable: a non-differentiable argument of the custom VJP
    if impl == "explicit":
        return _conv_explicit(x, kernel, strides, padding)
    if impl == "xla":
        return _conv_forward(x, kernel, strides, padding)
    raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}")


def _max_along(x: jax.Array, axis: int, window: int, stride: int, size: int) -> jax.Array:
    out = None
    for i in range(window):
        part = jax.lax.slice_in_dim(x, i, i + stride * (size - 1) + 1, stride, axis)
        out = part if out is None else jnp.maximum(out, part)
    return out


def pool_size(size: int, window: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length of a torch pooling along one axis.

    floor((size + 2p - window) / stride) + 1, or with ``ceil_mode`` the ceiling, less one when
    the last window would start in the right padding (torch's rule).
    """
    span = size + 2 * padding - window
    if span < 0:
        raise ValueError(f"pooling window {window} (padding {padding}) is larger than the "
                         f"input size {size}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0,
             impl: str = "auto", ceil_mode: bool = False) -> jax.Array:
    """NHWC max-pooling over ``window`` x ``window``, torch semantics (padding with -inf,
    output floor((H + 2p - window) / stride) + 1, or torch's ``ceil_mode``: see
    :func:`pool_size`; the extra windows on the right/bottom see -inf beyond the input).

    "explicit" (XLA:CPU) avoids the select-and-scatter gradient of ``lax.reduce_window``, which
    XLA:CPU expands into full-size int32 index arrays and a scatter: non-overlapping windows
    (window == stride, no padding) reshape and reduce; others take a maximum of strided slices,
    rows then columns. "xla" is ``flax.linen.max_pool``. Forward values are identical; gradients
    differ only where a window holds tied maxima (select-and-scatter gives all to one, the
    explicit path splits it), which after a ReLU means zeros whose gradient the ReLU drops.

    Args:
      x: [B, H, W, C].
      window, stride, padding: square window, stride and symmetric padding.
      impl: "auto", "explicit" or "xla" (see :func:`resolve_impl`).
      ceil_mode: torch's ``ceil_mode`` (InceptionV3's stem pools).

    Returns:
      [B, H', W', C].
    """
    impl = resolve_impl(impl)
    if impl not in CONV_IMPLS[1:]:
        raise ValueError(f"max_pool impl must be one of {CONV_IMPLS}, got {impl!r}")
    b, h, w, c = x.shape
    oh = pool_size(h, window, stride, padding, ceil_mode)
    ow = pool_size(w, window, stride, padding, ceil_mode)
    # Extra -inf rows / columns on the bottom / right for the windows ceil_mode adds.
    eh = max(0, (oh - 1) * stride + window - (h + 2 * padding))
    ew = max(0, (ow - 1) * stride + window - (w + 2 * padding))
    if impl == "xla":
        return nn.max_pool(x, (window, window), strides=(stride, stride),
                           padding=((padding, padding + eh), (padding, padding + ew)))
    if window == stride and padding == 0 and eh == ew == 0:
        x = x[:, :oh * stride, :ow * stride]
        return jnp.max(x.reshape(b, oh, stride, ow, stride, c), axis=(2, 4))
    if padding or eh or ew:
        x = jnp.pad(x, ((0, 0), (padding, padding + eh), (padding, padding + ew), (0, 0)),
                    constant_values=-jnp.inf)
    return _max_along(_max_along(x, 1, window, stride, oh), 2, window, stride, ow)


def _sum_along(x: jax.Array, axis: int, window: int, stride: int, size: int) -> jax.Array:
    out = None
    for i in range(window):
        part = jax.lax.slice_in_dim(x, i, i + stride * (size - 1) + 1, stride, axis)
        out = part if out is None else out + part
    return out


def avg_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """NHWC average pooling, torch's ``F.avg_pool2d`` defaults: zero padding that counts in the
    divisor (``count_include_pad=True``), so every window divides by ``window ** 2``; floor
    output size. Sums of strided slices, rows then columns (plain autodiff on every backend).

    Args:
      x: [B, H, W, C].
      window, stride, padding: square window, stride and symmetric zero padding.

    Returns:
      [B, H', W', C], H' = (H + 2p - window) // stride + 1; ``x``'s dtype.
    """
    b, h, w, c = x.shape
    oh = pool_size(h, window, stride, padding, False)
    ow = pool_size(w, window, stride, padding, False)
    if padding:
        x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    total = _sum_along(_sum_along(x, 1, window, stride, oh), 2, window, stride, ow)
    return total / jnp.asarray(window * window, x.dtype)


class Conv(nn.Module):
    """kh x kw convolution, NHWC, torch-style symmetric zero padding (default ``k // 2`` per axis).

    Attributes:
      features: output channels.
      kernel_size: square kernel size k, or (kh, kw) (InceptionV3's 1x7 / 7x1).
      strides: spatial stride.
      use_bias: whether to add a bias (torchvision ResNet convolutions have none).
      dtype: compute dtype (parameters stay float32).
      impl: convolution implementation, see :func:`conv2d`.
      padding: zero padding, an int or (rows, columns); None = ``(kh // 2, kw // 2)``.
    """
    features: int
    kernel_size: Any = 3
    strides: int = 1
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = he_normal_fan_out
    impl: str = "auto"
    padding: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = _pair(self.kernel_size)
        padding = (kh // 2, kw // 2) if self.padding is None else _pair(self.padding)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                            jnp.float32)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, padding,
                   self.impl)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y
