"""ACoL: Adversarial Complementary Learning (Zhang et al., CVPR 2018), as a head on any trunk.

Two classifier branches read the backbone's features ``f`` [B, h, w, C]. Each branch is
conv3x3(C -> W) + ReLU, conv3x3(W -> W) + ReLU (``W = spec.acol_width``, 1024), then a 1x1 class
convolution, stored Dense-shaped (kernel [W, M], bias [M]). With the branch features ``g`` (the
1x1 convolution's input) the class maps and logits are

    S_m(a, c) = Σ_k g(a, c, k) w_km + b_m,          logits_m = mean_{a,c} S_m(a, c).

Branch A reads ``f``. Its class map of the label ``y`` (ground truth in training, else
``argmax`` of branch A's logits) is min-max normalised over space,

    A(a, c) = (S^A_y(a, c) - min S^A_y) / (max S^A_y - min S^A_y)   (0 where max = min),

and branch B reads the erased features ``f · 1[A < δ]`` (δ = ``drop_threshold``, 0.7; the mask
carries no gradient). Training loss (:func:`acol_loss`): ``CE(logits_A, y) + CE(logits_B, y)``.
The CAM fuses the branches (``cams.fused_maps`` with fusion ``"max_minmax"``): each branch's
map min-max normalised, then the elementwise maximum.

Parameters: module ``acol`` with ``a_conv1``, ``a_conv2``, ``a_head``, ``b_conv1``, ``b_conv2``,
``b_head`` (the reference's ``classifier_A.{0,2,4}`` / ``classifier_B.{0,2,4}``).
"""
import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax import losses
from infocam_jax.methods import base
from infocam_jax.models.layers import Conv


class AcolOutput(NamedTuple):
    """What an ACoL network's apply returns.

    Attributes:
      logits: float32 [B, M], branch A (the prediction and the accuracy).
      logits_b: float32 [B, M], branch B (on the erased features).
      features_a: float32 [B, h, w, W], input of branch A's 1x1 class conv.
      features_b: float32 [B, h, w, W], input of branch B's 1x1 class conv.
    """
    logits: jax.Array
    logits_b: jax.Array
    features_a: jax.Array
    features_b: jax.Array


def minmax_hw(maps: jax.Array) -> jax.Array:
    """Per-image min-max normalisation over space: [B, h, w] -> [B, h, w] in [0, 1]
    (0 where the map is constant)."""
    lo = jnp.min(maps, axis=(1, 2), keepdims=True)
    span = jnp.max(maps, axis=(1, 2), keepdims=True) - lo
    return jnp.where(span > 0, (maps - lo) / jnp.where(span > 0, span, 1), 0.0)


class AcolHead(nn.Module):
    """The two ACoL branches (module docstring).

    Attributes:
      num_classes: M.
      drop_threshold: δ in [0, 1], erasing threshold on branch A's normalised map.
      width: channels of the branches' 3x3 convolutions.
      dtype: compute dtype of the convolutions (outputs float32).
      conv_impl: see ``layers.conv2d``.
    """
    num_classes: int
    drop_threshold: float = 0.7
    width: int = 1024
    dtype: Any = jnp.float32
    conv_impl: str = "auto"

    def _branch(self, x, prefix):
        for i in (1, 2):
            x = nn.relu(Conv(self.width, 3, dtype=self.dtype, impl=self.conv_impl,
                             name=f"{prefix}_conv{i}")(x))
        features = x.astype(jnp.float32)
        head = nn.Dense(self.num_classes, name=f"{prefix}_head",
                        kernel_init=nn.initializers.xavier_uniform())
        logits = head(jnp.mean(features, axis=(1, 2)))
        return features, logits, head.variables["params"]["kernel"]

    @nn.compact
    def __call__(self, x: jax.Array, labels: Optional[jax.Array] = None) -> AcolOutput:
        """Args: x [B, h, w, C] trunk features (compute dtype); labels int [B] or None
        (-> argmax of branch A). Returns :class:`AcolOutput`."""
        features_a, logits_a, kernel_a = self._branch(x, "a")
        if labels is None:
            labels = jnp.argmax(logits_a, axis=-1)
        columns = jnp.take(kernel_a, labels, axis=1).T                      # [B, W]
        class_map = jnp.einsum("bhwk,bk->bhw", features_a, columns,
                               precision=jax.lax.Precision.HIGHEST)
        attention = jax.lax.stop_gradient(minmax_hw(class_map))
        keep = (attention < self.drop_threshold).astype(x.dtype)[..., None]
        features_b, logits_b, _ = self._branch(x * keep, "b")
        return AcolOutput(logits_a, logits_b, features_a, features_b)


def acol_loss(outputs: AcolOutput, labels: jax.Array, weights=None,
              classification_loss=losses.softmax_cross_entropy) -> jax.Array:
    """``CE(logits_A, y) + CE(logits_B, y)`` (each the weighted batch mean of
    ``classification_loss``). Returns a float32 scalar."""
    return (classification_loss(outputs.logits, labels, weights=weights)
            + classification_loss(outputs.logits_b, labels, weights=weights))


@dataclasses.dataclass(frozen=True)
class AcolOptions(base.Options):
    """ACoL's options: ``drop_threshold`` δ (config ``acol_threshold``, in [0, 1])."""
    drop_threshold: float = dataclasses.field(default=0.7, metadata={"config": "acol_threshold"})

    def __post_init__(self):
        value = float(self.drop_threshold)
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"acol_threshold must be in [0, 1], got {value!r}")


def network_options(kwargs: dict) -> Tuple[float, None]:
    """Pops and validates ``acol_drop_threshold`` (default 0.7) from ``create_model``'s keywords;
    returns (head options, attention size)."""
    threshold = kwargs.pop("acol_drop_threshold", 0.7)
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"acol_drop_threshold must be in [0, 1], got {threshold!r}")
    return float(threshold), None


def head(module, features, taps, image_size, labels, widths) -> AcolOutput:  # pylint: disable=unused-argument
    """The network's ACoL head (module ``acol``) on the neck features [B, h, w, C]."""
    return AcolHead(module.num_classes, module.method_head.options, widths[0], module.dtype,
                    module.conv_impl, name="acol")(features, labels)


def loss(options, outputs, batch, mix, loss_fn, classification_loss):  # pylint: disable=unused-argument
    """:func:`acol_loss` with the configured classification loss."""
    return acol_loss(outputs, batch["label"], classification_loss=classification_loss)


def readout(variables, outputs: AcolOutput) -> base.Readout:
    """Branches A and B (``acol/a_head``, ``acol/b_head``), fusion "max_minmax"."""
    params = variables["params"]["acol"]
    heads = (params["a_head"], params["b_head"])
    return base.Readout((
        base.Branch(outputs.features_a, heads[0]["kernel"], heads[0]["bias"], outputs.logits),
        base.Branch(outputs.features_b, heads[1]["kernel"], heads[1]["bias"], outputs.logits_b)),
        "max_minmax")


def weight_layout(table: dict, conv: Callable, class_key: str) -> None:  # pylint: disable=unused-argument
    """The reference's ``classifier_{A,B}.{0,2,4}`` keys onto ``acol/{a,b}_{conv1,conv2,head}``
    (``conv(table, key, path, kind)``, ``models.convert``; the backbone's ``class_key`` is not
    used: each branch has its own class conv)."""
    for branch, name in (("A", "a"), ("B", "b")):
        conv(table, f"classifier_{branch}.0", ("acol", f"{name}_conv1"))
        conv(table, f"classifier_{branch}.2", ("acol", f"{name}_conv2"))
        conv(table, f"classifier_{branch}.4", ("acol", f"{name}_head"), "conv1x1_dense")


def model_kwargs(options: AcolOptions) -> dict:
    """``create_model`` keywords of the options: ``acol_drop_threshold``."""
    return {"acol_drop_threshold": float(options.drop_threshold)}


ACOL = base.register(base.Method(
    "acol", options=AcolOptions, layout="erasing", head=head, loss=loss, readout=readout,
    reads_labels=True, multi_label=False, posthoc=False, weight_layout=weight_layout,
    network_options=network_options, model_kwargs=model_kwargs,
    doc="ACoL: two classifier branches, the second on features erased by the first."))
