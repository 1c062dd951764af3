"""One network for every (backbone, head): trunk -> neck -> head.

``Network(backbone, num_classes, ...)`` reads the backbone's
:class:`~infocam_jax.models.spec.BackboneSpec` (its ``trunk`` and ``neck`` in the network
``layout``) and adds a head:

* ``head=None``: GAP -> Dense ``head``; ``apply -> (logits [B, M], features [B, h, w, K])``
  (ADL lives in the trunk / neck at ``adl_positions``).
* a :class:`Head` (a WSOL method's, ``infocam_jax.methods``): its ``fn`` is called inside this
  module's ``nn.compact`` scope as ``fn(module, features, taps, image_size, labels, widths)``
  with ``widths = spec.head_widths(...)`` and ``image_size`` the head's attention size (the
  input size unless ``Head.attention_size``); it creates its own named submodules and returns
  the method's outputs (``outputs[0]`` is the [B, M] logits).

``apply(variables, images, train=..., labels=None)``: ``labels`` int [B] are the classes a
method head reads (the ground truth in training); the GAP head ignores them.
"""
from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from infocam_jax.models import spec as spec_lib


class Head(NamedTuple):
    """A method head around the backbone's features (module docstring).

    Attributes:
      method: the WSOL method's name (the evaluation finds its readout by it).
      fn: ``fn(module, features, taps, image_size, labels, widths) -> outputs``.
      options: its hyper-parameters, read by ``fn`` (hashable).
      attention_size: (H, W) of its attention maps; None = the input size.
    """
    method: str
    fn: Callable
    options: Any = None
    attention_size: Optional[Tuple[int, int]] = None


class Network(nn.Module):
    """A backbone (by spec name) with a head.

    Attributes:
      backbone: a registered spec name ("vgg16_gap", "resnet50", ...).
      num_classes: M.
      layout: the backbone layout (``spec.LAYOUTS``).
      method_head: None (GAP + Dense ``head``) or a :class:`Head`.
      large_feature_map: the reference's option (backbone-specific strides).
      adl_positions, adl_drop_rate, adl_gamma: ADL.
      dtype, conv_impl, axis_name: as for the other models.
      width: base width of backbones that have one (digits_cnn; None = its default).
      backbone_options: ``((name, value), ...)`` of the backbone's other options
        (``TrunkOptions.backbone_options``; DeiT's head and sizes).
      activation: the backbone's ReLU (``spec.TrunkOptions.activation``; default ``nn.relu``).
    """
    backbone: str
    num_classes: int
    layout: str = "cam"
    method_head: Optional[Head] = None
    large_feature_map: bool = False
    adl_positions: Tuple[str, ...] = ()
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    axis_name: Optional[str] = None
    width: Optional[int] = None
    backbone_options: Tuple[Tuple[str, Any], ...] = ()
    activation: Callable[[Any], Any] = nn.relu

    def trunk_options(self) -> spec_lib.TrunkOptions:
        return spec_lib.TrunkOptions(self.layout, self.large_feature_map, self.adl_positions,
                                     self.adl_drop_rate, self.adl_gamma, self.dtype,
                                     self.conv_impl, self.axis_name, self.width,
                                     self.backbone_options, self.activation)

    @property
    def logits_from_gap(self) -> bool:
        """Whether ``logits == mean(features, (1, 2)) @ head.kernel + head.bias`` (the GAP
        head; False for a method head or a backbone head such as DeiT's class token)."""
        spec = spec_lib.get(self.backbone)
        return self.method_head is None and spec.gap_logits(self.trunk_options())

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False,
                 labels: Optional[jax.Array] = None):
        """Args: images [B, H, W, C] float32; train; labels int [B] or None (module docstring).

        Returns: ``(logits, features)`` (GAP head) or the head function's outputs.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        spec = spec_lib.get(self.backbone)
        opts = self.trunk_options()
        x, taps = spec.trunk(images.astype(self.dtype), train, opts)
        x = spec.neck(x, train, opts)
        head = self.method_head
        if head is not None:
            return head.fn(self, x, taps, head.attention_size or images.shape[1:3], labels,
                           spec_lib.head_widths(spec, opts))
        features = x.astype(jnp.float32)
        if spec.head is not None:
            return spec.head(features, taps, self.num_classes, opts), features
        logits = nn.Dense(self.num_classes, name="head",
                          kernel_init=spec.head_init)(jnp.mean(features, (1, 2)))
        return logits, features
