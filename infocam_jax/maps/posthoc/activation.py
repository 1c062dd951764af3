"""The activation maps: functions of the layer's activations alone (no gradient, no class).

Eigen-CAM.
"""
from __future__ import annotations

import jax.numpy as jnp

from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER


@registry.register("eigencam", "Eigen-CAM", family="activation")
def eigencam(model, variables, images, targets=None, *, layer: str = DEFAULT_LAYER,
             relu: bool = True):
    """Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, eq. 5-6).

    ``L = ReLU(X v_1)`` with ``X [hw, K]`` the layer's activations centred over positions and
    ``v_1`` its first right singular vector (first principal component of the channel vectors),
    as pytorch-grad-cam's ``get_2d_projection``. The sign of ``v_1`` is fixed so that ``X v_1``
    correlates positively with the channel sum (pytorch-grad-cam keeps LAPACK's arbitrary
    sign). ``targets`` are checked but do not enter: Eigen-CAM is class-agnostic.

    Relation to CAM: CAM weights the channels with the class column ``W[:, y]``; Eigen-CAM
    with ``v_1`` after removing each channel's spatial mean, i.e. it is ``CAM`` of a
    class-independent "weight column" ``v_1`` minus the constant ``mean_ij(A) · v_1``.

    Args and returns as :func:`gradcam`.
    """
    images, layer, targets, num_classes = core.prepare(model, variables, images, targets, layer)
    _, activation = core.forward_at_layer(model, variables, images, layer)
    maps = core.first_component_projection(activation.astype(jnp.float32))
    maps = jnp.maximum(maps, 0.0) if relu else maps
    return core.nan_where_invalid(maps, targets, num_classes)
