"""Model forward pass -> CAM-family and post-hoc maps of chosen classes -> score maps and boxes.

CAM-family maps come from ``infocam_jax.maps.cams``, post-hoc maps (Grad-CAM, ...) from
``infocam_jax.maps.posthoc``; score maps and boxes from ``infocam_jax.boxes`` with the settings'
upsampling and normalisation.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import boxes
from infocam_jax.maps import cams, posthoc
from infocam_jax.evaluation import backends
from infocam_jax.evaluation.settings import (MAP_KINDS, MULTI_LABEL_MAP_KINDS, POSTHOC_MAP_KINDS,
                                             EvalSettings)


def class_maps(map_kinds: tuple[str, ...], features: jax.Array, kernel: jax.Array,
               labels: jax.Array, *, logits: jax.Array | None,
               region_size: int) -> dict[str, jax.Array]:
    """The requested CAM-family maps of one class per image (single-label heads).

    Args:
      map_kinds: kinds from ``settings.KNOWN_MAP_KINDS`` except the post-hoc ones
        (``posthoc_maps``; :func:`single_label_maps` computes both).
      features: float ``[B,h,w,K]`` last feature maps.
      kernel: float ``[K,M]`` classifier kernel.
      labels: int ``[B]`` class per image.
      logits: float ``[B,M]`` model outputs: infoCAM+'s rival is the class with the lowest
        logit (bias included), as in the authors' code.
      region_size: infoCAM's R.

    Returns:
      ``{kind: float32 [B,h,w]}``.
    """
    posthoc_kinds = [k for k in map_kinds if k in POSTHOC_MAP_KINDS]
    if posthoc_kinds:
        raise ValueError(f"map_kinds {posthoc_kinds} are post-hoc maps of the model: use "
                         "single_label_maps")
    maps = {}
    if any(k in MAP_KINDS for k in map_kinds):
        maps.update(cams.all_maps(features, kernel, labels, region_size, rival="image",
                                  logits=logits))
    if "infocam_plus_region" in map_kinds:
        maps["infocam_plus_region"] = cams.infocam_plus(features, kernel, labels, region_size,
                                                        rival="region")
    if "cam_region" in map_kinds:
        maps["cam_region"] = cams.region_sum(cams.cam(features, kernel, labels), region_size)
    return {k: maps[k] for k in map_kinds}


def posthoc_maps(settings: EvalSettings, model, variables, images: jax.Array,
                 labels: jax.Array) -> dict[str, jax.Array]:
    """The post-hoc maps among ``settings.map_kinds`` (``posthoc.compute`` with the settings'
    layer and Score-CAM chunk), of class ``labels`` per image.

    Args:
      settings: evaluation settings.
      model, variables: the Flax model and its variables.
      images: float ``[B,H,W,C]``; labels: int ``[B]``.

    Returns:
      ``{kind: float32 [B,h',w']}`` at the layer's resolution.
    """
    return {k: posthoc.compute(k, model, variables, images, labels,
                               **settings.posthoc_options(k))
            for k in settings.posthoc_kinds}


def readout_class_maps(map_kinds: tuple[str, ...], readout, labels: jax.Array, *,
                       region_size: int) -> dict[str, jax.Array]:
    """:func:`class_maps` of every branch of a ``models.Readout``, fused by its rule.

    Each branch ``i`` gives ``class_maps(map_kinds, features_i, kernel_i, labels,
    logits=logits_i)``; each kind is fused with ``cams.fuse(..., readout.fusion)``: branch 0
    for "single" (then this is exactly :func:`class_maps` of that branch), the elementwise max
    of the per-branch min-max normalised maps for ACoL's "max_minmax" (``cams.fused_maps``).

    Returns:
      ``{kind: float32 [B,h,w]}``.
    """
    branches = readout.branches[:1] if readout.fusion == "single" else readout.branches
    per_branch = [class_maps(map_kinds, b.features, b.kernel, labels, logits=b.logits,
                             region_size=region_size) for b in branches]
    return {k: cams.fuse([maps[k] for maps in per_branch], readout.fusion) for k in map_kinds}


def single_label_maps(settings: EvalSettings, model, variables, images: jax.Array,
                      labels: jax.Array, *, logits: jax.Array, features: jax.Array,
                      kernel: jax.Array, readout=None) -> dict[str, jax.Array]:
    """Every map of ``settings.map_kinds`` (CAM family and post-hoc), ``{kind: [B,h,w]}`` in
    ``map_kinds`` order; ``logits``, ``features`` are the model's outputs on ``images``.

    ``readout`` (a ``models.Readout``, from ``backends.forward_readout``), when given, makes
    the CAM-family maps (:func:`readout_class_maps`; ``features`` / ``kernel`` are then its
    branch 0); None = the one branch ``(features, kernel, logits)``."""
    cam_kinds = tuple(k for k in settings.map_kinds if k not in POSTHOC_MAP_KINDS)
    maps = {}
    if cam_kinds and readout is None:
        maps = class_maps(cam_kinds, features, kernel, labels, logits=logits,
                          region_size=settings.region_size)
    elif cam_kinds:
        maps = readout_class_maps(cam_kinds, readout, labels, region_size=settings.region_size)
    maps.update(posthoc_maps(settings, model, variables, images, labels))
    return {k: maps[k] for k in settings.map_kinds}


def kind_scoremaps(settings: EvalSettings, maps: dict[str, jax.Array]) -> jax.Array:
    """``{kind: [B,h_k,w_k]}`` -> float32 ``[kinds, B, H, W]`` score maps in ``map_kinds``
    order; kinds of one map resolution share one ``boxes.scoremaps`` call."""
    by_shape: dict[tuple, list[str]] = {}
    for kind in settings.map_kinds:
        by_shape.setdefault(maps[kind].shape, []).append(kind)
    out = {}
    for kinds in by_shape.values():
        sm = stacked_scoremaps(settings, jnp.stack([maps[k] for k in kinds]))
        out.update(zip(kinds, sm))
    return jnp.stack([out[k] for k in settings.map_kinds])


def multilabel_class_maps(kind: str, features: jax.Array, kernel: jax.Array,
                          labels: jax.Array, *, region_size: int) -> jax.Array:
    """Multi-label maps for several labels per image: CAM, or infoCAM (region-summed CAM).

    Args:
      kind: "cam" | "infocam".
      features: float ``[B,h,w,K]``.
      kernel: float ``[K,M]``.
      labels: int ``[B,G]``, the class of each of G (box) slots.
      region_size: infoCAM's R.

    Returns:
      float32 ``[B,G,h,w]``.
    """
    if kind not in MULTI_LABEL_MAP_KINDS:
        raise ValueError(f"multi-label map kind must be one of {MULTI_LABEL_MAP_KINDS}, "
                         f"got {kind!r}")

    def one_slot(slot_labels):
        if kind == "cam":
            return cams.multilabel_cam(features, kernel, slot_labels)
        return cams.multilabel_infocam(features, kernel, slot_labels, region_size)

    return jax.vmap(one_slot, in_axes=1, out_axes=1)(labels)


def stacked_scoremaps(settings: EvalSettings, maps: jax.Array) -> jax.Array:
    """``[..., h, w]`` maps -> ``[..., H, W]`` score maps in [0, 1], in one ``boxes.scoremaps``
    call (upsampling ``settings.upsample``, normalisation ``settings.normalize``)."""
    flat = maps.reshape((-1,) + maps.shape[-2:])
    sm = boxes.scoremaps(flat, settings.image_size, settings.upsample,
                         normalize=settings.normalize)
    return sm.reshape(maps.shape[:-2] + tuple(settings.image_size))


def predict_maps(settings: EvalSettings, model, variables, images: jax.Array,
                 labels: jax.Array | None = None, *,
                 kernel_fn: Callable[[Any], jax.Array] | None = None) -> dict[str, Any]:
    """Forward pass, score maps at image size and boxes at ``cam_threshold``.

    For visualisation; jit it with ``settings``, ``model`` and ``kernel_fn`` bound.

    Args:
      settings: evaluation settings (``normalize`` decides the score maps and boxes).
      model: Flax module: any ``infocam_jax.models`` network (ACoL / SPG are applied with
        ``labels=``, ``backends.forward_readout``) or one with ``apply(variables, images,
        train=False) -> (logits, features)``.
      variables: the model's variables.
      images: float ``[B,H,W,C]``.
      labels: int ``[B]`` classes whose maps to draw; None -> the predicted (top-1) class.
        Multi-label settings use the multi-label maps of that one label per image.
      kernel_fn: ``variables -> [K,M]`` classifier kernel of ``(logits, features)`` models
        (default ``models.classifier_kernel``; ACoL / SPG read their own heads).

    Returns:
      ``{"logits": [B,M], "labels": [B], "scoremaps": {kind: [B,H,W] in [0,1]},
      "boxes": {kind: int32 [B,4]}}``.
    """
    backends.check_model_settings(settings, model)
    logits, readout = backends.forward_readout(model, variables, images, labels,
                                               kernel_fn=kernel_fn)
    features, kernel = readout.branches[0].features, readout.branches[0].kernel
    if labels is None:
        labels = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    out = {"logits": logits, "labels": labels, "scoremaps": {}, "boxes": {}}
    if settings.multi_label:
        maps = {k: multilabel_class_maps(k, features, kernel, labels[:, None],
                                         region_size=settings.region_size)[:, 0]
                for k in settings.map_kinds}
    else:
        maps = single_label_maps(settings, model, variables, images, labels, logits=logits,
                                 features=features, kernel=kernel, readout=readout)
    for kind in settings.map_kinds:
        sm = stacked_scoremaps(settings, maps[kind])
        out["scoremaps"][kind] = sm
        out["boxes"][kind] = boxes.largest_box(sm, np.array([settings.cam_threshold]),
                                               **backends.box_options(settings))[:, 0]
    return out
