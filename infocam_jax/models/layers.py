"""Building blocks shared by the backbones: a convolution with torch-style padding.

The convolution keeps Flax's parameter layout (``kernel`` HWIO float32, optional ``bias``) so
converted torchvision weights and checkpoints do not depend on how the product is computed.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# He-normal on fan-out, as torchvision initialises VGG and ResNet convolutions.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv2d(x: jax.Array, kernel: jax.Array, strides: int, padding: int) -> jax.Array:
    """NHWC convolution with symmetric zero padding (torch semantics, not XLA 'SAME').

    Args:
      x: [B, H, W, Cin] input.
      kernel: [k, k, Cin, Cout] kernel (HWIO), same dtype as ``x``.
      strides: spatial stride (same for both axes).
      padding: zero padding on every side.

    Returns:
      [B, H', W', Cout] with H' = (H + 2p - k) // s + 1.
    """
    k = kernel.shape[0]
    if k == 1 and strides == 1 and padding == 0:
        # A 1x1 convolution is a matmul over channels; XLA:CPU runs dot_general markedly faster
        # than its generic convolution for this case (forward and backward).
        return jnp.einsum("bhwc,co->bhwo", x, kernel[0, 0])
    if k == 1 and padding == 0:
        return jnp.einsum("bhwc,co->bhwo", x[:, ::strides, ::strides], kernel[0, 0])
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(strides, strides),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
    """k x k convolution, NHWC, torch-style symmetric padding ``kernel_size // 2``.

    Attributes:
      features: output channels.
      kernel_size: square kernel size k.
      strides: spatial stride.
      use_bias: whether to add a bias (torchvision ResNet convolutions have none).
      dtype: compute dtype (parameters stay float32).
    """
    features: int
    kernel_size: int = 3
    strides: int = 1
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = he_normal_fan_out

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                            jnp.float32)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.strides, k // 2)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y
