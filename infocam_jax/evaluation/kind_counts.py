"""Counters with a leading map-kind axis, as the single- and multi-label evaluators keep them."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from infocam_jax.evaluation.settings import EvalSettings


def kind_slice(tree, index: int):
    """The counters of map kind ``index`` (counters carry a leading map-kind axis)."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def per_kind_curves(settings: EvalSettings, counts: Mapping[str, Any], key: str,
                    curve: Callable[[int], dict]) -> dict[str, dict]:
    """``{kind: curve(i)}`` for the ``i``-th kind of ``settings.map_kinds``.

    ``curve`` runs with NumPy's divide / invalid warnings off (a zero count gives NaN).

    Raises:
      ValueError: ``counts`` has no ``key`` (the threshold grid is counted only with
        ``settings.box_accuracy``).
    """
    if key not in counts:
        raise ValueError("curves need settings.box_accuracy=True (config eval_box_accuracy)")
    with np.errstate(divide="ignore", invalid="ignore"):
        return {kind: curve(i) for i, kind in enumerate(settings.map_kinds)}
