"""A WSOL method as one object, and the one registry of them.

A :class:`Method` says everything the rest of the library needs to know about a method, so
that training, evaluation, post-hoc maps and weight import ask the registry and never name a
method:

* ``options``: a frozen dataclass of its hyper-parameters (``Options`` subclass), read from the
  config fields it owns (``config.method_options.<field>``) and validated in ``__post_init__``
  (ValueError naming the field);
* ``layout``: which of a backbone's network layouts it needs (``BackboneSpec.layouts``:
  "cam", "adl", or the reference's per-method variants of the trunk and neck);
* ``head``: None (GAP + Dense ``head``) or a function that builds the method's head around the
  backbone's features inside :class:`~infocam_jax.models.network.Network`;
* ``transform``: a jittable batch transform before the forward pass, or None;
* ``loss``: its training loss, or None (the configured loss of the main logits);
* ``readout``: which features and kernels make its CAMs and how they fuse;
* ``reads_labels``: whether the network's apply takes ``labels=`` (training and evaluation);
* ``multi_label``: whether it trains with multi-label heads and losses;
* ``posthoc``: whether post-hoc maps (Grad-CAM, ...) are defined for its network;
* ``weight_layout``: ``(head_table, conv, class_key) -> None``: the reference's state-dict
  keys of its head, where they differ (``models.convert``; ``class_key`` is the backbone's key
  of the reference's 1x1 class conv);
* ``network_options``: ``kwargs -> (head options, attention size)``: pops and validates the
  :func:`create_model` keywords it owns (every registered method's run, so a bad value names
  its keyword whatever the method);
* ``model_kwargs``: ``options -> dict`` of :func:`create_model` keywords its options set.

Add a method by building a :class:`Method` and calling :func:`register` (tests/test_toy_method.py
does it inside a test file).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import jax

from infocam_jax import models

# fold_in data of the batch-transform streams (device indices are small: no collision).
AUGMENT_STREAM = 0x7A11
PERM_STREAM = 0x7A12


class Branch(NamedTuple):
    """One classifier branch: class maps ``S_m = Σ_k features_k kernel_km (+ bias_m)``.

    Attributes:
      features: float32 [B, h, w, K] (the 1x1 class conv's / GAP's input).
      kernel: float32 [K, M].
      bias: float32 [M] or None.
      logits: float32 [B, M] (= mean_{h,w}(features) @ kernel + bias).
    """
    features: jax.Array
    kernel: jax.Array
    bias: Optional[jax.Array]
    logits: jax.Array


class Readout(NamedTuple):
    """The branches whose maps make a method's CAM and how they fuse
    (``cams.fused_maps``): "single" (branch 0) or "max_minmax" (two branches)."""
    branches: Tuple[Branch, ...]
    fusion: str


def main_logits(outputs) -> jax.Array:
    """The [B, M] logits of any method's outputs (prediction, accuracy): ``outputs[0]``."""
    return outputs[0]


def head_readout(variables, outputs) -> Readout:
    """Readout of a ``(logits [B, M], features [B, h, w, K])`` network with a Dense ``head``."""
    head = variables["params"]["head"]
    return Readout((Branch(outputs[1], head["kernel"], head["bias"], outputs[0]),), "single")


class Options:
    """Base of a method's options: a frozen dataclass whose fields are read from
    ``config.method_options`` (the config key is the field's ``metadata["config"]``, default
    the field name) and validated in ``__post_init__`` (ValueError naming the config key)."""

    @classmethod
    def config_keys(cls) -> Tuple[str, ...]:
        """The ``config.method_options`` keys this options class owns."""
        return tuple(f.metadata.get("config", f.name) for f in dataclasses.fields(cls))

    @classmethod
    def from_config(cls, config):
        """The options from ``config.method_options`` (missing keys: the defaults).

        Raises:
          ValueError: naming ``config.method_options.<key>`` of an invalid value.
        """
        raw = config.get("method_options", None) or {}
        kwargs = {f.name: raw[f.metadata.get("config", f.name)]
                  for f in dataclasses.fields(cls) if f.metadata.get("config", f.name) in raw}
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise ValueError(f"config.method_options.{e}") from e


@dataclasses.dataclass(frozen=True)
class NoOptions(Options):
    """Options of a method without hyper-parameters."""


def plain_loss(options, outputs, batch, mix, loss_fn, classification_loss):  # pylint: disable=unused-argument
    """The configured loss of the main logits: ``loss_fn(outputs[0], batch)``."""
    return loss_fn(main_logits(outputs), batch)


def _no_kwargs(options) -> Dict[str, Any]:  # pylint: disable=unused-argument
    return {}


@dataclasses.dataclass(frozen=True)
class Method:
    """A WSOL method (module docstring).

    ``transform(options, batch, step_key, device_index) -> (batch, mix)``; ``loss(options,
    outputs, batch, mix, loss_fn, classification_loss) -> scalar`` (``loss_fn(logits [b, M],
    batch)`` is the configured batch-mean loss, ``classification_loss(logits, labels,
    weights=)`` its single-label form); ``readout(variables, outputs) -> Readout``;
    ``head(module, features, taps, image_size, labels, widths) -> outputs`` (``module`` the
    ``models.Network``; its ``method_head.options`` are the head's options).
    """
    name: str
    options: type = NoOptions
    layout: str = "cam"
    head: Optional[Callable] = None
    transform: Optional[Callable] = None
    loss: Callable = plain_loss
    readout: Callable = head_readout
    reads_labels: bool = False
    multi_label: bool = True
    posthoc: bool = True
    weight_layout: Optional[Callable] = None
    network_options: Optional[Callable] = None
    model_kwargs: Callable[[Any], Dict[str, Any]] = _no_kwargs
    doc: str = ""

    def options_from_config(self, config):
        """This method's options from ``config.method_options`` (ValueError naming the key)."""
        return self.options.from_config(config)

    def convert_options(self) -> Dict[str, Any]:
        """``models.convert.key_map`` / ``convert_state_dict`` keywords of the reference's
        state-dict layout of this method: ``layout`` and ``head_layout``."""
        return {"layout": self.layout, "head_layout": self.weight_layout}

    def train_step(self, options, loss_fn: Callable, classification_loss: Callable) -> "TrainMethod":
        """What the per-device train step does for this method with ``options``."""
        transform = None
        if self.transform is not None:
            def transform(batch, step_key, device_index):
                return self.transform(options, batch, step_key, device_index)

        def loss(outputs, batch, mix):
            return self.loss(options, outputs, batch, mix, loss_fn, classification_loss)

        return TrainMethod(self.name, transform, loss, self.reads_labels)


@dataclasses.dataclass(frozen=True)
class TrainMethod:
    """What the per-device train step (``train.state.train_step``) calls for one method.

    Attributes:
      name: the method.
      transform: (batch, step_key, device_index) -> (batch, mix) or None (no batch transform);
        ``mix`` is what ``loss`` needs besides the outputs (CutMix: (perm, λ)).
      loss: (outputs, batch, mix) -> scalar mean loss over the shard.
      pass_labels: whether the network's apply takes ``labels=batch["label"]`` in training.
    """
    name: str
    transform: Optional[Callable]
    loss: Callable
    pass_labels: bool

    def forward(self, model, variables, batch, key):
        """``model.apply`` in training mode; returns (outputs, updated collections)."""
        kwargs = {"labels": batch["label"]} if self.pass_labels else {}
        return model.apply(variables, batch["image"], train=True,
                           rngs={"adl": key, "dropout": jax.random.fold_in(key, 1)},
                           mutable=["batch_stats"], **kwargs)


_REGISTRY: Dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds ``method`` to the registry (by ``method.name``, replacing one of that name) and
    returns it."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a Method, got {type(method).__name__}")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Removes ``name`` from the registry (tests that register a method of their own)."""
    _REGISTRY.pop(name, None)


def names() -> Tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Method:
    """The registered method ``name``; ValueError listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(names())}")
    return _REGISTRY[name]


def label_methods() -> Tuple[str, ...]:
    """Methods whose network reads the labels (``Method.reads_labels``)."""
    return tuple(n for n, m in _REGISTRY.items() if m.reads_labels)


def multi_label_methods() -> Tuple[str, ...]:
    """Methods that train with multi-label heads (``Method.multi_label``)."""
    return tuple(n for n, m in _REGISTRY.items() if m.multi_label)


def config_keys() -> Tuple[str, ...]:
    """Every ``config.method_options`` key some registered method owns."""
    return tuple(dict.fromkeys(k for m in _REGISTRY.values() for k in m.options.config_keys()))


def method_of(config) -> str:
    """``config.method`` ("cam" for configs written before the method field existed)."""
    return str(config.get("method", "cam") or "cam")


def check_config(config) -> Tuple[Method, Any]:
    """Validates ``config.method`` and every registered method's ``config.method_options``;
    returns ``(method, its options)``.

    Raises:
      ValueError naming the field: unknown method, unknown or invalid option, a multi-label
      config with a single-label method.
    """
    name = method_of(config)
    if name not in _REGISTRY:
        raise ValueError(f"config.method must be one of {names()}, got {name!r}")
    raw: Mapping[str, Any] = config.get("method_options", None) or {}
    unknown = sorted(set(raw) - set(config_keys()))
    if unknown:
        raise ValueError(f"config.method_options has unknown field(s) {unknown}; valid: "
                         f"{sorted(config_keys())}")
    for other in _REGISTRY.values():
        other.options_from_config(config)
    method = _REGISTRY[name]
    if not method.multi_label and bool(config.get("multi_label", False)):
        raise ValueError(f"config.method={name!r} trains with single labels (the network "
                         f"erases / guides by the ground-truth class); it cannot be used with "
                         f"config.multi_label=True (config.loss={config.get('loss')!r})")
    return method, method.options_from_config(config)


def create_model(backbone: str, num_classes: int, method: str = "cam",
                 large_feature_map: bool = False, **options: Any):
    """Builds ``backbone`` with ``method``'s network: ``models.create`` in the method's layout
    with its head.

    Args:
      backbone: a ``models.MODEL_NAMES`` name.
      num_classes: M >= 1.
      method: a registered method name ("cam" default).
      large_feature_map: the reference's option (see ``models.create``).
      **options: ``models.create``'s backbone options (adl_*, axis_name, dtype, conv_impl,
        width) and the keywords the registered methods own (``Method.network_options``:
        acol_drop_threshold (0.7, in [0, 1]); spg_thresholds (three (high, low) pairs,
        validated here, used by the loss); spg_attention_size (None: the input size; an int S
        or a pair (H, W): SPG's attention maps and pixel losses at that size, as the
        reference, which hard-codes 224 x 224)).

    Returns:
      A flax.linen Module: ``(logits, features)`` networks for methods without a head, else
      ``apply(variables, images, train=..., labels=None)`` returns the method's outputs
      (``outputs[0]`` is the logits).

    Raises:
      ValueError: unknown backbone, method or option (listing the valid ones), a method the
        backbone cannot host (naming both), or a bad option value (naming the field).
    """
    chosen = get(method)
    if backbone in models.MODEL_NAMES:
        hosts = models.spec.get(backbone).layouts
        if chosen.layout not in hosts:
            able = [n for n, m in _REGISTRY.items() if m.layout in hosts]
            raise ValueError(f"method {method!r} is not available for backbone {backbone!r}; "
                             f"available methods: {', '.join(able)}")
    options = dict(options)
    network = {m.name: m.network_options(options) for m in _REGISTRY.values()
               if m.network_options is not None}
    head = None
    if chosen.head is not None:
        if options.get("adl_positions"):
            raise ValueError(f"adl_positions is only used with methods without a head (e.g. "
                             f"'cam' or 'adl'), got {options['adl_positions']!r} with method "
                             f"{method!r}")
        head_options, size = network[chosen.name]
        head = models.Head(chosen.name, chosen.head, head_options, size)
    return models.create(backbone, num_classes, large_feature_map, layout=chosen.layout,
                         method_head=head, **options)


def model_options(config) -> Dict[str, Any]:
    """``create_model`` keywords beyond (backbone, num_classes) for ``config``:
    ``config.model_options`` and the method's (``Method.model_kwargs``).

    ``model_options.adl_positions = ""`` is dropped for a method with the "adl" layout (so the
    backbone's reference positions apply); for a method with a head the unused ADL options are
    dropped when ``adl_positions`` is empty (a non-empty one reaches ``create_model``, which
    refuses it); ``large_feature_map = False`` (every backbone's default) is dropped too.
    """
    method, options_ = check_config(config)
    options = dict(config.get("model_options", None) or {})
    if method.layout == "adl" and not options.get("adl_positions", ""):
        options.pop("adl_positions", None)
    if method.head is not None and not options.get("adl_positions", ""):
        for key in ("adl_positions", "adl_drop_rate", "adl_gamma"):
            options.pop(key, None)
    if not options.get("large_feature_map", False):
        options.pop("large_feature_map", None)
    options.update(method.model_kwargs(options_))
    if method.name != "cam":
        options["method"] = method.name
    return options


def default_options() -> Dict[str, Any]:
    """``{config.method_options key: default}`` of every registered method (the base config's
    ``method_options``; the defaults live only in the options dataclasses)."""
    out = {}
    for method in _REGISTRY.values():
        for f in dataclasses.fields(method.options):
            out[f.metadata.get("config", f.name)] = f.default
    return out
