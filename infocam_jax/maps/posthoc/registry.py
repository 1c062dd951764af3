"""The registry of post-hoc maps: one :class:`PosthocMap` per method, registered by its module.

A map module defines ``f(model, variables, images, targets, *, layer=..., relu=..., **options)
-> float32 [B, h, w]`` and decorates it with :func:`register`; the package ``__init__`` imports
the module, and :func:`compute`, :func:`jitted`, the evaluation settings and the tables find it by
name. Every method takes ``layer`` and ``relu`` (and, through :func:`compute`, ``aug_smooth``);
``options`` names the keywords it takes beyond
them (e.g. ``chunk_size`` for the perturbation maps), so a caller can pass only what applies.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from infocam_jax.maps.posthoc import augment, core
from infocam_jax.maps.posthoc import targets as targets_lib

COMMON_OPTIONS = ("layer", "relu", "aug_smooth")
FAMILIES = ("gradient", "perturbation", "activation", "attention")
# "map": [B, h, w] at the layer (a WSOL map kind); "image": [B, H, W, C] at the input, e.g. guided
# backpropagation (no map kind: ``names()`` and the eval settings leave these out).
OUTPUTS = ("map", "image")


@dataclasses.dataclass(frozen=True)
class PosthocMap:
    """One post-hoc map method.

    Attributes:
      name: registry key, e.g. ``"gradcam"`` (also the eval map kind).
      display_name: name in tables, e.g. ``"Grad-CAM"``.
      fn: ``fn(model, variables, images, targets, *, layer, relu, **options) -> [B, h, w]``.
      options: keyword options beyond ``COMMON_OPTIONS``.
      family: one of ``FAMILIES`` (gradient: one vjp; perturbation: forward passes of
        perturbed inputs; activation: activations only; attention: a transformer's attention
        probabilities).
      output: one of ``OUTPUTS``.
      common: the shared options it takes (``COMMON_OPTIONS`` unless it has no layer).
      callable_targets: whether ``fn`` takes a :class:`~.targets.Score` target (a function of
        the logits) besides ``None`` and class indices.
    """
    name: str
    display_name: str
    fn: Callable[..., Any]
    options: tuple[str, ...] = ()
    family: str = "gradient"
    output: str = "map"
    common: tuple[str, ...] = COMMON_OPTIONS
    callable_targets: bool = True

    @property
    def accepted_options(self) -> tuple[str, ...]:
        return self.common + self.options


_REGISTRY: dict[str, PosthocMap] = {}


def register(name: str, display_name: str, *, options: tuple[str, ...] = (),
             family: str = "gradient", output: str = "map",
             common: tuple[str, ...] = COMMON_OPTIONS, callable_targets: bool | None = None):
    """Decorator: registers ``fn`` under ``name`` and returns it unchanged.

    ``callable_targets`` defaults to True for the gradient and activation families (the shared
    core differentiates any score) and False for perturbation maps, which read a class's logit
    unless they say otherwise.

    Raises:
      ValueError: ``name`` already registered, ``family`` not in ``FAMILIES`` or ``output``
        not in ``OUTPUTS``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")

    def decorate(fn):
        if name in _REGISTRY:
            raise ValueError(f"post-hoc map {name!r} is already registered")
        takes_score = family != "perturbation" if callable_targets is None else callable_targets
        _REGISTRY[name] = PosthocMap(name, display_name, fn, tuple(options), family, output,
                                     tuple(common), takes_score)
        return fn
    return decorate


def unregister(name: str) -> None:
    """Removes ``name`` (for tests that register a temporary map)."""
    _REGISTRY.pop(name, None)


def names(family: str | None = None, *, output: str = "map") -> tuple[str, ...]:
    """Registered names of one ``output`` kind (default the maps) in registration order,
    optionally only one ``family``."""
    return tuple(n for n, m in _REGISTRY.items()
                 if (family is None or m.family == family) and m.output == output)


def get(name: str) -> PosthocMap:
    """The registered map ``name``.

    Raises:
      ValueError: unknown ``name``, listing the registered ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"method must be one of {names()}, got {name!r}")
    return _REGISTRY[name]


def display_names() -> dict[str, str]:
    """``{name: display_name}`` of every registered method (maps and image outputs)."""
    return {n: m.display_name for n, m in _REGISTRY.items()}


def applicable_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that method ``name`` takes (a caller's shared settings)."""
    accepted = get(name).accepted_options
    return {k: v for k, v in options.items() if k in accepted}


def compute(method: str, model, variables, images, targets=None, **options):
    """Map ``method`` of ``images`` for ``targets``.

    Args:
      method: a registered name (:func:`names`).
      model, variables, images: as the map functions (``images`` float ``[B, H, W, C]``).
      targets: (:mod:`.targets`) ``None`` (default: the predicted class), int ``[B]``, a
        callable ``fn(logits [M]) -> scalar`` differentiated instead of the one-hot, or
        multi-label int ``[B, T]`` (``-1`` pads) / bool ``[B, M]``.
      **options: ``layer`` (our path or a torch spelling, :mod:`.layer_names`), ``relu``,
        ``aug_smooth`` (bool, default False: the map averaged over flipped and
        brightness-scaled views, :mod:`.augment`) and the method's own options.

    Returns:
      float32 ``[B, h, w]`` at the layer's resolution; for multi-label targets
      ``(maps [B, T, h, w], valid [B, T] bool)``, zeros in the padded slots. The slots are a
      ``vmap`` of the map over ``T``: the forward pass runs once, the vjp (or the score
      readout) ``T`` times.

    Raises:
      ValueError: unknown ``method``, an option it does not take, a callable ``targets`` for a
        map that reads a class index, bad ``targets`` (shape, dtype, concrete values outside
        ``[0, M)``), and the method's own errors, each naming the argument.
    """
    entry = get(method)
    unknown = sorted(set(options) - set(entry.accepted_options))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid: "
                         f"{', '.join(entry.accepted_options)}")
    targets = targets_lib.as_score(targets)
    if isinstance(targets, targets_lib.Score) and not entry.callable_targets:
        raise ValueError(f"targets: method {method!r} reads one class's logit and takes no "
                         "callable target; pass class indices [B] or None (predicted class)")
    fn = entry.fn
    if augment.check_aug_smooth(options.pop("aug_smooth", False)):
        fn = functools.partial(augment.smoothed, entry.fn)
    if not targets_lib.is_multilabel(targets):
        return fn(model, variables, images, targets, **options)
    batch, num_classes = core.num_classes_of(model, variables, images)
    slots, valid = targets_lib.slots(targets, batch, num_classes)
    maps = jax.vmap(lambda t: fn(model, variables, images, t, **options),
                    in_axes=1, out_axes=1)(slots)
    return jnp.where(valid[:, :, None, None], maps, 0.0), valid


@functools.cache
def jitted(method: str, model, **options):
    """A cached ``jax.jit`` of ``(variables, images, targets=None) -> maps`` for one method,
    model and options (hashable; Flax modules are). A callable target is static: each new
    function compiles once; a bool ``[B, M]`` mask gives ``T = M`` slots under ``jit``."""
    get(method)
    fn = jax.jit(functools.partial(compute, method, model, **options))

    def run(variables, images, targets=None):
        return fn(variables, images, targets_lib.as_score(targets))
    return run
