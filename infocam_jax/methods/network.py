"""One network for every (backbone, method): trunk -> neck -> method head; the method losses;
the evaluation readout (which features and kernels make each method's CAMs).

``WSOLNet(backbone, method, num_classes, ...)`` reads the backbone's
:class:`~infocam_jax.models.spec.BackboneSpec` and adds the method's head:

* ``cam`` / ``adl``: GAP -> Dense ``head``; ``apply -> (logits [B, M], features [B, h, w, K])``
  (ADL lives in the trunk / neck at ``adl_positions``).
* ``acol``: :class:`~infocam_jax.methods.acol.AcolHead` (module ``acol``) -> ``AcolOutput``.
* ``spg``: :class:`~infocam_jax.methods.spg.SpgHead` (module ``spg``) -> ``SpgOutput``.

``apply(variables, images, train=..., labels=None)``: ``labels`` int [B] are the classes ACoL
erases and SPG attends to (the ground truth in training, as the reference's
``model(images, target)``); None -> the argmax of the (branch A) logits. CAM/ADL ignore them.
``outputs[0]`` is the [B, M] logits for every method (:func:`main_logits`).
"""
from typing import Any, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax import losses
from infocam_jax.methods import acol as acol_lib
from infocam_jax.models import spec as spec_lib
from infocam_jax.methods import spg as spg_lib


class WSOLNet(nn.Module):
    """A backbone (by spec name) with a WSOL method's head.

    Attributes:
      backbone: a registered spec name ("vgg16_gap", "resnet50", ...).
      method: network method, one of ``spec.NETWORK_METHODS``.
      num_classes: M.
      large_feature_map: the reference's option (backbone-specific strides).
      adl_positions, adl_drop_rate, adl_gamma: ADL (cam/adl only).
      acol_drop_threshold: ACoL's erasing threshold δ.
      dtype, conv_impl, axis_name: as for the other models.
      width: base width of backbones that have one (digits_cnn; None = its default).
      spg_attention_size: (H, W) of SPG's attention maps and pixel losses; None = the input
        size (the reference hard-codes 224 x 224).
    """
    backbone: str
    method: str
    num_classes: int
    large_feature_map: bool = False
    adl_positions: Tuple[str, ...] = ()
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    acol_drop_threshold: float = 0.7
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    axis_name: Optional[str] = None
    width: Optional[int] = None
    spg_attention_size: Optional[Tuple[int, int]] = None

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False,
                 labels: Optional[jax.Array] = None):
        """Args: images [B, H, W, C] float32; train; labels int [B] or None (module docstring).

        Returns: ``(logits, features)`` (cam/adl), ``AcolOutput`` or ``SpgOutput``.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        spec = spec_lib.get(self.backbone)
        opts = spec_lib.TrunkOptions(self.method, self.large_feature_map, self.adl_positions,
                                     self.adl_drop_rate, self.adl_gamma, self.dtype,
                                     self.conv_impl, self.axis_name, self.width)
        acol_width, spg_b_width, spg_c_width = spec_lib.head_widths(spec, opts)
        x, taps = spec.trunk(images.astype(self.dtype), train, opts)
        x = spec.neck(x, train, opts)
        if self.method == "acol":
            return acol_lib.AcolHead(self.num_classes, self.acol_drop_threshold,
                                     acol_width, self.dtype, self.conv_impl,
                                     name="acol")(x, labels)
        if self.method == "spg":
            return spg_lib.SpgHead(self.num_classes, spg_b_width, spg_c_width,
                                   self.dtype, self.conv_impl,
                                   name="spg")(x, taps,
                                               self.spg_attention_size or images.shape[1:3],
                                               labels)
        features = x.astype(jnp.float32)
        logits = nn.Dense(self.num_classes, name="head",
                          kernel_init=nn.initializers.normal(0.01))(jnp.mean(features, (1, 2)))
        return logits, features


def main_logits(outputs) -> jax.Array:
    """The [B, M] logits of any method's outputs (prediction, accuracy): ``outputs[0]``."""
    return outputs[0]


def method_loss(method: str, outputs, labels: jax.Array, *, weights=None,
                classification_loss=losses.softmax_cross_entropy,
                spg_thresholds=spg_lib.DEFAULT_THRESHOLDS) -> jax.Array:
    """The training loss of a network method.

    Args:
      method: any of ``spec.METHODS`` (has / cutmix: the CAM loss on their transformed batch;
        CutMix's label mixing is two calls of this, weighted by λ).
      outputs: the model's apply outputs.
      labels: int [B] ground truth.
      weights: optional [B] example weights (0 = padding).
      classification_loss: ``(logits, labels, weights=) -> scalar`` (default softmax CE).
      spg_thresholds: SPG's ((h1, l1), (h2, l2), (h3, l3)).

    Returns:
      float32 scalar: cam/adl/has/cutmix ``CE(logits)``; acol ``CE(a) + CE(b)``; spg
      ``CE + three attention BCEs`` (``spg.spg_loss``).
    """
    net = spec_lib.network_method(method)
    if net == "acol":
        return acol_lib.acol_loss(outputs, labels, weights, classification_loss)
    if net == "spg":
        return spg_lib.spg_loss(outputs, labels, weights, spg_thresholds, classification_loss)
    return classification_loss(outputs[0], labels, weights=weights)


class Branch(NamedTuple):
    """One classifier branch: class maps ``S_m = Σ_k features_k kernel_km (+ bias_m)``.

    Attributes:
      features: float32 [B, h, w, K] (the 1x1 class conv's / GAP's input).
      kernel: float32 [K, M].
      bias: float32 [M].
      logits: float32 [B, M] (= mean_{h,w}(features) @ kernel + bias).
    """
    features: jax.Array
    kernel: jax.Array
    bias: jax.Array
    logits: jax.Array


class Readout(NamedTuple):
    """The branches whose maps make a method's CAM and how they fuse
    (``cams.fused_maps``): "single" (branch 0) or "max_minmax" (ACoL)."""
    branches: Tuple[Branch, ...]
    fusion: str


def readout(method: str, variables, outputs) -> Readout:
    """Which features and kernels make the method's CAM / infoCAM / infoCAM+.

    Args:
      method: any of ``spec.METHODS``.
      variables: the model's variables.
      outputs: its apply outputs (for ACoL / SPG from ``apply(..., labels=y)`` when the maps
        of the classes ``y`` are read: ACoL's branch B depends on the erased class).

    Returns:
      :class:`Readout`: cam/adl/has/cutmix one branch (features, ``head``), fusion "single";
      acol branches A and B (``acol/a_head``, ``acol/b_head``), fusion "max_minmax"; spg one
      branch (``spg/a4``), fusion "single".
    """
    net = spec_lib.network_method(method)
    params = variables["params"]
    if net == "acol":
        heads = (params["acol"]["a_head"], params["acol"]["b_head"])
        branches = (Branch(outputs.features_a, heads[0]["kernel"], heads[0]["bias"],
                           outputs.logits),
                    Branch(outputs.features_b, heads[1]["kernel"], heads[1]["bias"],
                           outputs.logits_b))
        return Readout(branches, "max_minmax")
    if net == "spg":
        head = params["spg"]["a4"]
        return Readout((Branch(outputs.features, head["kernel"], head["bias"],
                               outputs.logits),), "single")
    head = params["head"]
    return Readout((Branch(outputs[1], head["kernel"], head["bias"], outputs[0]),), "single")
