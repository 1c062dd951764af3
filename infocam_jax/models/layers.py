"""Building blocks shared by the backbones: a convolution with torch-style padding.

The convolution keeps Flax's parameter layout (``kernel`` HWIO float32, optional ``bias``) so
converted torchvision weights and checkpoints do not depend on how the product is computed.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# He-normal on fan-out, as torchvision initialises VGG and ResNet convolutions.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv_forward(x: jax.Array, kernel: jax.Array, strides: int, padding: int) -> jax.Array:
    k = kernel.shape[0]
    if k == 1 and padding == 0:
        # A 1x1 convolution is a matmul over channels; XLA:CPU runs dot_general markedly faster
        # than its generic convolution for this case.
        return jnp.einsum("bhwc,co->bhwo", x[:, ::strides, ::strides], kernel[0, 0])
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(strides, strides),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _kernel_grad(x, g, k, strides, padding):
    """dL/dkernel [k, k, C, O] as k*k matmuls [C, N] @ [N, O] over shifted input windows.

    XLA:CPU lowers the kernel gradient of a convolution to a generic convolution that
    contracts over batch x space with poor blocking; explicit (materialised) transposes and
    matmuls are faster for the large maps of VGG and ResNet.

    The sums run over N = batch x h x w terms (hundreds of thousands): products accumulate in
    float32 whatever the input dtype (bfloat16 accumulation would lose the gradient's low bits).
    Returns float32.
    """
    c, o = x.shape[-1], g.shape[-1]
    h, w = g.shape[1], g.shape[2]
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))) if padding else x
    g2 = g.reshape(-1, o)
    taps = []
    for i in range(k):
        for j in range(k):
            window = jax.lax.slice(xp, (0, i, j, 0),
                                   (xp.shape[0], i + strides * (h - 1) + 1,
                                    j + strides * (w - 1) + 1, c), (1, strides, strides, 1))
            taps.append(jnp.matmul(jnp.transpose(window.reshape(-1, c)), g2,
                                   preferred_element_type=jnp.float32))
    return jnp.stack(taps).reshape(k, k, c, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_explicit(x, kernel, strides, padding):
    return _conv_forward(x, kernel, strides, padding)


def _conv_explicit_fwd(x, kernel, strides, padding):
    return _conv_forward(x, kernel, strides, padding), (x, kernel)


def _conv_explicit_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: _conv_forward(x, kernel, strides, padding), x)
    dx = input_vjp(g)[0]
    dkernel = _kernel_grad(x, g, kernel.shape[0], strides, padding).astype(kernel.dtype)
    return dx, dkernel


_conv_explicit.defvjp(_conv_explicit_fwd, _conv_explicit_bwd)

CONV_IMPLS = ("auto", "explicit", "xla")


def resolve_impl(impl: str) -> str:
    """"auto" -> "explicit" on the CPU backend, "xla" on GPU/TPU (where the vendor convolution
    libraries compute kernel gradients well); other values are returned unchanged."""
    if impl == "auto":
        return "explicit" if jax.default_backend() == "cpu" else "xla"
    return impl


def conv2d(x: jax.Array, kernel: jax.Array, strides: int, padding: int,
           impl: str = "auto") -> jax.Array:
    """NHWC convolution with symmetric zero padding (torch semantics, not XLA 'SAME').

    Args:
      x: [B, H, W, Cin] input.
      kernel: [k, k, Cin, Cout] kernel (HWIO), same dtype as ``x``.
      strides: spatial stride (same for both axes).
      padding: zero padding on every side.
      impl: "explicit" (kernel gradient as matmuls, see ``_kernel_grad``), "xla" (plain
        autodiff of the XLA convolution) or "auto" (see :func:`resolve_impl`; decided when
        traced, from ``jax.default_backend()``). All give the same values up to float rounding.

    Returns:
      [B, H', W', Cout] with H' = (H + 2p - k) // s + 1.
    """
    impl = resolve_impl(impl)
    if impl == "explicit":
        return _conv_explicit(x, kernel, strides, padding)
    if impl == "xla":
        return _conv_forward(x, kernel, strides, padding)
    raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}")


class Conv(nn.Module):
    """k x k convolution, NHWC, torch-style symmetric padding ``kernel_size // 2``.

    Attributes:
      features: output channels.
      kernel_size: square kernel size k.
      strides: spatial stride.
      use_bias: whether to add a bias (torchvision ResNet convolutions have none).
      dtype: compute dtype (parameters stay float32).
      impl: convolution implementation, see :func:`conv2d`.
    """
    features: int
    kernel_size: int = 3
    strides: int = 1
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = he_normal_fan_out
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, k // 2,
                   self.impl)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y
