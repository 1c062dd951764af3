"""SPG: Self-produced Guidance (Zhang et al., ECCV 2018), as a head on any trunk with two taps.

The backbone spec gives the class-head features ``f`` [B, h, w, K] (its neck output) and two
taps, ``spg_b1`` and ``spg_b2`` (spec.py). With ``W_b = spec.spg_b_width`` and
``W_c = spec.spg_c_width``:

* b1 = conv3x3(W_b)+ReLU (``b1a``) of tap b1; b2 = conv3x3(W_b)+ReLU (``b2a``) of tap b2;
  both go through the same ``shared_conv`` (3x3, W_b) + ReLU + ``shared_out`` (1x1 -> 1):
  one-channel logits ``B1`` [B, h1, w1], ``B2`` [B, h2, w2].
* ``C`` = ``c_out`` (1x1 -> 1) of ReLU(``c_conv`` (3x3, W_c) of ``f``): [B, h, w].
* the class maps ``S_m = Σ_k f_k w_km + b_m`` of the 1x1 class conv ``a4`` (Dense-shaped
  kernel [K, M]); logits = mean over space of ``S``.
* ``attention`` = min-max over space of ``up(S)_y`` (y = label: ground truth in training,
  else argmax of the logits); ``fused_attention`` = ``(σ(up(B1)) + σ(up(B2))) / 2``; both carry
  no gradient. ``up`` = bilinear resize to the attention size with half-pixel centres (torch
  ``align_corners=False``). The attention size is the input size by default; the reference
  WSOL evaluation hard-codes 224 x 224 whatever the input (the same thing at its 224 input):
  ``methods.create_model(..., spg_attention_size=224)`` reproduces that at any input size.

Loss (:func:`spg_loss`, thresholds ((h1, l1), (h2, l2), (h3, l3)) = ((0.7, 0.01), (0.5, 0.05),
(0.7, 0.1))):

    CE(logits, y) + BCE(up(B2), mask(attention, h1, l1))
                  + BCE(up(B1), mask(σ(up(B2)), h2, l2))
                  + BCE(up(C),  mask(fused_attention, h3, l3))

where ``mask(a, hi, lo)`` is 1 where ``a > hi`` (per image: where fewer than 30 pixels pass,
``a > 0.7 max(a)`` instead), then 0 where ``a < lo``, and ignored elsewhere; BCE is the
sigmoid cross-entropy averaged over the non-ignored pixels of the whole batch (0 if none).

Parameters: module ``spg`` with ``b1a``, ``b2a``, ``shared_conv``, ``shared_out``, ``c_conv``,
``c_out``, ``a4`` (the reference's SPG_B_1a.0, SPG_B_2a.0, SPG_B_shared.{0,2}, SPG_C.{0,2},
SPG_A4 / SPG_A_4).
"""
import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import losses
from infocam_jax.methods import base
from infocam_jax.methods.acol import minmax_hw
from infocam_jax.models.layers import Conv

DEFAULT_THRESHOLDS = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
MIN_FOREGROUND_PIXELS = 30
FALLBACK_FRACTION = 0.7


class SpgOutput(NamedTuple):
    """What an SPG network's apply returns (float32).

    Attributes:
      logits: [B, M].
      features: [B, h, w, K], input of the 1x1 class conv ``a4``.
      logits_b1: [B, h1, w1]; logits_b2: [B, h2, w2]; logits_c: [B, h, w].
      attention: [B, H, W]; fused_attention: [B, H, W] (H, W = the attention size: the input
        size, or ``spg_attention_size``).
    """
    logits: jax.Array
    features: jax.Array
    logits_b1: jax.Array
    logits_b2: jax.Array
    logits_c: jax.Array
    attention: jax.Array
    fused_attention: jax.Array


def _interp_matrix(out_size: int, in_size: int) -> np.ndarray:
    """[out, in] weights of 1-D linear interpolation, half-pixel centres, edge-clamped."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    m = np.zeros((out_size, in_size), np.float64)
    np.add.at(m, (np.arange(out_size), i0), 1.0 - frac)
    np.add.at(m, (np.arange(out_size), i1), frac)
    return m.astype(np.float32)


def resize_bilinear(maps: jax.Array, size: Tuple[int, int]) -> jax.Array:
    """Bilinear resize of [B, h, w] maps to [B, H, W], torch ``align_corners=False``
    semantics: ``src = (dst + 0.5) · in/out - 0.5`` clamped at 0, neighbours clamped at the
    edge. Two matmuls with static interpolation matrices."""
    ry = jnp.asarray(_interp_matrix(size[0], maps.shape[1]))
    rx = jnp.asarray(_interp_matrix(size[1], maps.shape[2]))
    return jnp.einsum("Hh,bhw,Ww->bHW", ry, maps.astype(jnp.float32), rx,
                      precision=jax.lax.Precision.HIGHEST)


class SpgHead(nn.Module):
    """The SPG branches and class head (module docstring).

    Attributes:
      num_classes: M.
      b_width: W_b; c_width: W_c.
      dtype: compute dtype of the convolutions (outputs float32).
      conv_impl: see ``layers.conv2d``.
    """
    num_classes: int
    b_width: int = 512
    c_width: int = 512
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    def _conv(self, features, k, name):
        return Conv(features, k, dtype=self.dtype, impl=self.conv_impl,
                    kernel_init=nn.initializers.xavier_uniform(), name=name)

    @nn.compact
    def __call__(self, x: jax.Array, taps: Dict[str, jax.Array], image_size: Tuple[int, int],
                 labels: Optional[jax.Array] = None) -> SpgOutput:
        """Args: x [B, h, w, K] neck features (compute dtype); taps with "spg_b1", "spg_b2";
        image_size (H, W): the attention size (the input size or ``spg_attention_size``);
        labels int [B] or None (-> argmax). Returns :class:`SpgOutput`."""
        shared_conv = self._conv(self.b_width, 3, "shared_conv")
        shared_out = self._conv(1, 1, "shared_out")

        def side(tap, name):
            y = nn.relu(self._conv(self.b_width, 3, name)(taps[tap].astype(self.dtype)))
            return shared_out(nn.relu(shared_conv(y)))[..., 0].astype(jnp.float32)

        logits_b1 = side("spg_b1", "b1a")
        logits_b2 = side("spg_b2", "b2a")
        logits_c = self._conv(1, 1, "c_out")(nn.relu(self._conv(self.c_width, 3, "c_conv")(x)))
        logits_c = logits_c[..., 0].astype(jnp.float32)
        features = x.astype(jnp.float32)
        head = nn.Dense(self.num_classes, name="a4", kernel_init=nn.initializers.xavier_uniform())
        logits = head(jnp.mean(features, axis=(1, 2)))
        if labels is None:
            labels = jnp.argmax(logits, axis=-1)
        columns = jnp.take(head.variables["params"]["kernel"], labels, axis=1).T
        class_map = jnp.einsum("bhwk,bk->bhw", features, columns,
                               precision=jax.lax.Precision.HIGHEST)
        attention = minmax_hw(resize_bilinear(class_map, image_size))
        fused = (jax.nn.sigmoid(resize_bilinear(logits_b1, image_size))
                 + jax.nn.sigmoid(resize_bilinear(logits_b2, image_size))) / 2
        return SpgOutput(logits, features, logits_b1, logits_b2, logits_c,
                         jax.lax.stop_gradient(attention), jax.lax.stop_gradient(fused))


def check_attention_size(size) -> Optional[Tuple[int, int]]:
    """Validates ``spg_attention_size``: None, a positive int S (-> (S, S)) or a pair (H, W).

    Raises:
      ValueError: naming ``spg_attention_size``.
    """
    if size is None:
        return None
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    try:
        h, w = pair
    except (TypeError, ValueError):
        h = w = None
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
             for v in (h, w))
    if not ok:
        raise ValueError("spg_attention_size must be None, a positive int or a pair of "
                         f"positive ints, got {size!r}")
    return int(h), int(w)


def check_thresholds(thresholds: Sequence[Sequence[float]]) -> Tuple[Tuple[float, float], ...]:
    """Validates SPG's ((h1, l1), (h2, l2), (h3, l3)): three pairs with 0 <= low <= high <= 1.

    Raises:
      ValueError: naming ``spg_thresholds``.
    """
    try:
        pairs = tuple((float(h), float(l)) for h, l in thresholds)
    except (TypeError, ValueError) as e:
        raise ValueError(f"spg_thresholds must be three (high, low) pairs, got {thresholds!r}") from e
    if len(pairs) != 3 or not all(0.0 <= l <= h <= 1.0 for h, l in pairs):
        raise ValueError("spg_thresholds must be three (high, low) pairs with "
                         f"0 <= low <= high <= 1, got {thresholds!r}")
    return pairs


def spg_targets(attention: jax.Array, high: float, low: float) -> Tuple[jax.Array, jax.Array]:
    """SPG's pixel targets of one attention map, vectorised over the batch.

    Args:
      attention: float [B, H, W].
      high, low: foreground / background thresholds.

    Returns:
      (target float32 [B, H, W] in {0, 1}, valid bool [B, H, W]): foreground where
      ``a > high`` (where fewer than 30 pixels of an image pass: ``a > 0.7 · max(a)``), then
      background (target 0) where ``a < low``; pixels that are neither are not valid (the
      reference's 255).
    """
    fg = attention > high
    few = jnp.sum(fg, axis=(1, 2), keepdims=True) < MIN_FOREGROUND_PIXELS
    peak = jnp.max(attention, axis=(1, 2), keepdims=True)
    fg = jnp.where(few, attention > FALLBACK_FRACTION * peak, fg)
    bg = attention < low
    return jnp.where(bg, 0.0, 1.0).astype(jnp.float32), fg | bg


def masked_bce(logits: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean sigmoid cross-entropy over the valid pixels (0 if none); stable log-sum-exp form."""
    x = logits.astype(jnp.float32)
    per_pixel = jnp.maximum(x, 0) - x * target + jnp.log1p(jnp.exp(-jnp.abs(x)))
    count = jnp.sum(valid)
    return jnp.sum(jnp.where(valid, per_pixel, 0.0)) / jnp.maximum(count, 1)


def spg_loss(outputs: SpgOutput, labels: jax.Array, weights=None,
             thresholds: Sequence[Sequence[float]] = DEFAULT_THRESHOLDS,
             classification_loss=losses.softmax_cross_entropy) -> jax.Array:
    """SPG's training loss (module docstring). ``weights`` [B] (0 = padding) drops an image's
    CE term and its pixels. Returns a float32 scalar: the sum of :func:`spg_loss_terms`."""
    return sum(spg_loss_terms(outputs, labels, weights, thresholds, classification_loss))


def spg_loss_terms(outputs: SpgOutput, labels: jax.Array, weights=None,
                   thresholds: Sequence[Sequence[float]] = DEFAULT_THRESHOLDS,
                   classification_loss=losses.softmax_cross_entropy
                   ) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The four terms of :func:`spg_loss`, float32 scalars: ``(CE(logits, y),
    BCE(up(B2), mask(attention, h1, l1)), BCE(up(B1), mask(σ(up(B2)), h2, l2)),
    BCE(up(C), mask(fused_attention, h3, l3)))`` (the reference's loss_cls, loss_b2_att,
    loss_b1_b2i, loss_c1_fus). ``up`` resizes to the attention maps' size."""
    (h1, l1), (h2, l2), (h3, l3) = check_thresholds(thresholds)
    size = outputs.attention.shape[1:]
    keep = (jnp.ones(outputs.logits.shape[:1], bool) if weights is None
            else jnp.asarray(weights) > 0)[:, None, None]
    up_b1 = resize_bilinear(outputs.logits_b1, size)
    up_b2 = resize_bilinear(outputs.logits_b2, size)
    up_c = resize_bilinear(outputs.logits_c, size)

    def term(logits, attention, high, low):
        target, valid = spg_targets(jax.lax.stop_gradient(attention), high, low)
        return masked_bce(logits, target, valid & keep)

    return (classification_loss(outputs.logits, labels, weights=weights),
            term(up_b2, outputs.attention, h1, l1),
            term(up_b1, jax.nn.sigmoid(up_b2), h2, l2),
            term(up_c, outputs.fused_attention, h3, l3))


@dataclasses.dataclass(frozen=True)
class SpgOptions(base.Options):
    """SPG's options: ``thresholds`` (config ``spg_thresholds``): three (high, low) pairs,
    0 <= low <= high <= 1 (:data:`DEFAULT_THRESHOLDS`)."""
    thresholds: Tuple[Tuple[float, float], ...] = dataclasses.field(
        default=DEFAULT_THRESHOLDS, metadata={"config": "spg_thresholds"})

    def __post_init__(self):
        object.__setattr__(self, "thresholds", check_thresholds(self.thresholds))


def network_options(kwargs: dict) -> Tuple[None, Optional[Tuple[int, int]]]:
    """Pops and validates ``spg_thresholds`` (used by the loss) and ``spg_attention_size`` from
    ``create_model``'s keywords; returns (head options, attention size)."""
    check_thresholds(kwargs.pop("spg_thresholds", DEFAULT_THRESHOLDS))
    return None, check_attention_size(kwargs.pop("spg_attention_size", None))


def head(module, features, taps, image_size, labels, widths) -> SpgOutput:
    """The network's SPG head (module ``spg``) on the neck features and the two taps."""
    return SpgHead(module.num_classes, widths[1], widths[2], module.dtype, module.conv_impl,
                   name="spg")(features, taps, image_size, labels)


def loss(options: SpgOptions, outputs, batch, mix, loss_fn, classification_loss):  # pylint: disable=unused-argument
    """:func:`spg_loss` with the options' thresholds and the configured classification loss."""
    return spg_loss(outputs, batch["label"], thresholds=options.thresholds,
                    classification_loss=classification_loss)


def readout(variables, outputs: SpgOutput) -> base.Readout:
    """One branch: the class conv ``spg/a4`` on its input features, fusion "single"."""
    a4 = variables["params"]["spg"]["a4"]
    return base.Readout((base.Branch(outputs.features, a4["kernel"], a4["bias"],
                                     outputs.logits),), "single")


def weight_layout(table: dict, conv: Callable, class_key: str) -> None:
    """The reference's SPG head keys (``class_key``: its 1x1 class conv, ``SPG_A_4`` / ``SPG_A4``;
    ``SPG_B_1a.0``, ``SPG_B_2a.0``, ``SPG_B_shared.{0,2}``, ``SPG_C.{0,2}``) onto ``spg/{a4,
    b1a, b2a, shared_conv, shared_out, c_conv, c_out}`` (``models.convert``)."""
    conv(table, class_key, ("spg", "a4"), "conv1x1_dense")
    conv(table, "SPG_B_1a.0", ("spg", "b1a"))
    conv(table, "SPG_B_2a.0", ("spg", "b2a"))
    conv(table, "SPG_B_shared.0", ("spg", "shared_conv"))
    conv(table, "SPG_B_shared.2", ("spg", "shared_out"))
    conv(table, "SPG_C.0", ("spg", "c_conv"))
    conv(table, "SPG_C.2", ("spg", "c_out"))


def model_kwargs(options: SpgOptions) -> dict:
    """``create_model`` keywords of the options: ``spg_thresholds``."""
    return {"spg_thresholds": options.thresholds}


SPG = base.register(base.Method(
    "spg", options=SpgOptions, layout="guidance", head=head, loss=loss, readout=readout,
    reads_labels=True, multi_label=False, posthoc=False, weight_layout=weight_layout,
    network_options=network_options, model_kwargs=model_kwargs,
    doc="SPG: self-produced guidance heads on two taps of the backbone."))
