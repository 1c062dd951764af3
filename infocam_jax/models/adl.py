"""Attention-based Dropout Layer (ADL; Choe & Shim, CVPR 2019) and its position codes.

During training ADL multiplies a feature map by one of two spatial maps computed from the
map itself (attention = mean over channels):

* drop mask: 1 where attention < gamma * max(attention) of that image, else 0 (hides the most
  discriminative region so the classifier learns the rest of the object);
* importance map: sigmoid(attention) (reinforces the discriminative region).

One Bernoulli draw per forward pass (not per image), with probability ``drop_rate``, picks the
drop mask for the whole batch, otherwise the importance map. At evaluation ADL is the identity.
Randomness comes from the ``'adl'`` RNG stream: ``apply(..., rngs={"adl": key})``.

For visualisation, every ADL layer sows its attention map ``[B, h, w]`` (float32) into the
``'intermediates'`` collection under ``attention`` (and, in training, the map it applied under
``selected``): ``apply(..., mutable=["intermediates"])``; see ``models.adl_maps``.
"""
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class ADL(nn.Module):
    """Attention-based dropout on an NHWC feature map.

    Attributes:
      drop_rate: probability of applying the drop mask (else the importance map), in [0, 1].
      gamma: drop threshold as a fraction of the per-image attention maximum, in [0, 1].
    """
    drop_rate: float = 0.75
    gamma: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Args: x [B, h, w, C] features; train: apply ADL (else identity). Returns x's shape."""
        attention = jnp.mean(x.astype(jnp.float32), axis=-1, keepdims=True)  # [B, h, w, 1]
        self.sow("intermediates", "attention", attention[..., 0])
        if not train:
            return x
        importance = jax.nn.sigmoid(attention)
        peak = jnp.max(attention, axis=(1, 2, 3), keepdims=True)
        drop_mask = (attention < self.gamma * peak).astype(jnp.float32)
        use_drop = jax.random.bernoulli(self.make_rng("adl"), self.drop_rate)
        selected = jnp.where(use_drop, drop_mask, importance)
        self.sow("intermediates", "selected", selected[..., 0])
        return x * selected.astype(x.dtype)


def parse_positions(codes: str, valid: Sequence[str], model: str) -> Tuple[str, ...]:
    """Splits a space-separated position string and checks every code.

    Args:
      codes: e.g. "3M 4M 53" ("" or whitespace = no ADL).
      valid: the codes the model understands.
      model: model name for the error message.

    Returns:
      The codes as a tuple, in the given order, without duplicates.

    Raises:
      ValueError: naming the unknown codes and listing the valid ones.
    """
    if not isinstance(codes, str):
        raise ValueError(f"adl_positions must be a space-separated string, got {codes!r}")
    parsed = tuple(dict.fromkeys(codes.split()))
    unknown = [c for c in parsed if c not in valid]
    if unknown:
        raise ValueError(f"unknown ADL position code(s) {unknown} for {model}; "
                         f"valid codes: {' '.join(valid)}")
    return parsed


def check_rates(drop_rate: float, gamma: float) -> None:
    """Raises ValueError unless both ADL hyper-parameters lie in [0, 1]."""
    if not 0.0 <= drop_rate <= 1.0:
        raise ValueError(f"adl_drop_rate must be in [0, 1], got {drop_rate}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"adl_gamma must be in [0, 1], got {gamma}")
