"""The registry of post-hoc maps: one :class:`PosthocMap` per method, registered by its module.

A map module defines ``f(model, variables, images, targets, *, layer=..., relu=..., **options)
-> float32 [B, h, w]`` and decorates it with :func:`register`; the package ``__init__`` imports
the module, and :func:`compute`, :func:`jitted`, the evaluation settings and the tables find it by
name. Every method takes ``layer`` and ``relu``; ``options`` names the keywords it takes beyond
them (e.g. ``chunk_size`` for the perturbation maps), so a caller can pass only what applies.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax

COMMON_OPTIONS = ("layer", "relu")
FAMILIES = ("gradient", "perturbation", "activation", "attention")


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
    """
    name: str
    display_name: str
    fn: Callable[..., Any]
    options: tuple[str, ...] = ()
    family: str = "gradient"

    @property
    def accepted_options(self) -> tuple[str, ...]:
        return COMMON_OPTIONS + self.options


_REGISTRY: dict[str, PosthocMap] = {}


def register(name: str, display_name: str, *, options: tuple[str, ...] = (),
             family: str = "gradient"):
    """Decorator: registers ``fn`` under ``name`` and returns it unchanged.

    Raises:
      ValueError: ``name`` already registered, or ``family`` not in ``FAMILIES``.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def decorate(fn):
        if name in _REGISTRY:
            raise ValueError(f"post-hoc map {name!r} is already registered")
        _REGISTRY[name] = PosthocMap(name, display_name, fn, tuple(options), family)
        return fn
    return decorate


def unregister(name: str) -> None:
    """Removes ``name`` (for tests that register a temporary map)."""
    _REGISTRY.pop(name, None)


def names(family: str | None = None) -> tuple[str, ...]:
    """Registered names in registration order, optionally only one ``family``."""
    return tuple(n for n, m in _REGISTRY.items() if family is None or m.family == family)


def get(name: str) -> PosthocMap:
    """The registered map ``name``.

    Raises:
      ValueError: unknown ``name``, listing the registered ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"method must be one of {names()}, got {name!r}")
    return _REGISTRY[name]


def display_names() -> dict[str, str]:
    """``{name: display_name}`` of every registered map."""
    return {n: m.display_name for n, m in _REGISTRY.items()}


def applicable_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that method ``name`` takes (a caller's shared settings)."""
    accepted = get(name).accepted_options
    return {k: v for k, v in options.items() if k in accepted}


def compute(method: str, model, variables, images, targets, **options):
    """Map ``method`` of ``images``: ``get(method).fn(model, variables, images, targets, **options)``.

    Args:
      method: a registered name (:func:`names`).
      **options: ``layer``, ``relu`` and the method's own options.

    Raises:
      ValueError: unknown ``method`` or an option it does not take (naming both), and the
        method's own errors.
    """
    entry = get(method)
    unknown = sorted(set(options) - set(entry.accepted_options))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid: "
                         f"{', '.join(entry.accepted_options)}")
    return entry.fn(model, variables, images, targets, **options)


@functools.cache
def jitted(method: str, model, **options):
    """A cached ``jax.jit`` of ``(variables, images, targets) -> maps`` for one method, model
    and options (hashable; Flax modules are)."""
    get(method)
    return jax.jit(functools.partial(compute, method, model, **options))
