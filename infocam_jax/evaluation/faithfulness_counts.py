"""The faithfulness counters of the single-label eval step, one entry per metric name of
``settings.faithfulness`` (``FAITHFULNESS_METRICS``), each with a leading map-kind axis.

Counters (``infocam_jax.metrics.faithfulness`` / ``deletion_insertion``) and flat results per
map kind ``K`` (the maps are the eval's score maps, the explained class the ground truth):

  "confidence" -> ``confidence`` (ConfidenceCounts): K/average_drop, K/increase_in_confidence,
      K/mean_absolute_drop, K/mean_confidence_change
  "road" -> ``road_morf``, ``road_lerf`` (RoadCounts): K/road_<order>_p<p>(_accuracy),
      K/road_<order>(_accuracy) (percentile means: pytorch-grad-cam's ROAD...Average),
      K/road_<order>_unconverged, K/road_combined (ROADCombined; equal percentile lists only)
  "deletion", "insertion" -> same names (CausalCounts): K/deletion_auc, K/insertion_auc
  "complexity" -> ``complexity`` (ComplexityCounts): K/complexity
  "arcc" -> ``arcc`` (ArccCounts): K/arcc, K/coherency (pytorch-grad-cam's ARCC, Coherency;
      ROAD at ``arcc.ARCC_PERCENTILES`` with ``road_noise`` / ``road_seed``)

Cost per map kind: "confidence" one forward pass of B images, "road" one per percentile and a
CG solve, "deletion" / "insertion" ``J + 1`` (``causal_steps`` + 1 at most) in chunks of
``causal_chunk_size``, "complexity" none, "arcc" the kind's maps again (``maps_fns``) and
8 ROAD passes. The kinds run one after another (``lax.map``; "arcc": a loop over kinds).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax.evaluation.kind_counts import kind_slice
from infocam_jax.evaluation.settings import EvalSettings
from infocam_jax.metrics import arcc, deletion_insertion, faithfulness


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def road_orders(settings: EvalSettings):
    """``(("morf", percentiles), ("lerf", percentiles))`` of ``settings``."""
    return (("morf", settings.road_morf_percentiles), ("lerf", settings.road_lerf_percentiles))


def init_counts(settings: EvalSettings) -> dict[str, Any]:
    """Zero counters of ``settings.faithfulness``, stacked over ``settings.map_kinds``."""
    names = settings.faithfulness
    empty = {}
    if "confidence" in names:
        empty["confidence"] = faithfulness.ConfidenceCounts.empty()
    if "road" in names:
        for order, percentiles in road_orders(settings):
            empty[f"road_{order}"] = faithfulness.RoadCounts.empty(percentiles, order)
    for mode in deletion_insertion.CAUSAL_MODES:
        if mode in names:
            empty[mode] = deletion_insertion.CausalCounts.empty(
                int(np.prod(settings.image_size)), mode, settings.causal_steps)
    if "complexity" in names:
        empty["complexity"] = faithfulness.ComplexityCounts.empty()
    if "arcc" in names:
        empty["arcc"] = arcc.ArccCounts.empty()
    n = len(settings.map_kinds)
    return {name: _stack([c] * n) for name, c in empty.items()}


def _road_update(settings, apply_fn, images, labels, y, sm, valid, counts) -> dict:
    key = jax.random.PRNGKey(settings.road_seed)
    out = {}
    for order, percentiles in road_orders(settings):
        def per_kind(s, order=order, percentiles=percentiles):
            imputed = [faithfulness.road_images(images, s, p, order, key, labels,
                                                noise=settings.road_noise, with_residual=True)
                       for p in percentiles]
            return (jnp.stack([apply_fn(x) for x, _ in imputed]),                 # [P, B, M]
                    jnp.stack([r for _, r in imputed]))                           # [P, B]
        z, r = lax.map(per_kind, sm)                                   # [K, P, B, M], [K, P, B]
        out[f"road_{order}"] = jax.vmap(lambda c, z, r: c.add(y, z, labels, valid, residual=r))(
            counts[f"road_{order}"], z, r)
    return out


def _arcc_update(settings, apply_fn, maps_fns, images, labels, sm, valid, counts) -> dict:
    key = jax.random.PRNGKey(settings.road_seed)
    per_kind = [arcc.arcc_per_image(apply_fn, maps_fn, images, s, labels, key,
                                    noise=settings.road_noise)
                for maps_fn, s in zip(maps_fns, sm)]
    scores = jnp.stack([p["arcc"] for p in per_kind])                           # [K, B]
    coherency = jnp.stack([p["coherency"] for p in per_kind])                   # [K, B]
    return {"arcc": jax.vmap(lambda c, a, h: c.add(a, h, valid))(counts["arcc"], scores,
                                                                  coherency)}


def update(settings: EvalSettings, apply_fn: Callable[[jax.Array], jax.Array], images, labels,
           logits, sm, valid, counts: Mapping[str, Any], maps_fns=None) -> dict[str, Any]:
    """The faithfulness counters after one batch (traced in the eval step).

    Args:
      apply_fn: ``images [n,H,W,C] -> logits [n,M]``; images float ``[B,H,W,C]``;
      labels: int ``[B]``; logits: ``apply_fn(images)``; sm: float ``[kinds, B, H, W]``
        score maps; valid: bool ``[B]``; counts: :func:`init_counts`'s structure.
      maps_fns: per map kind, ``(images, labels) -> [B, H, W]`` score maps of that kind
        (needed by "arcc": its coherency maps the explanation images again).
    """
    names = settings.faithfulness
    out = {}
    y = faithfulness.class_scores(logits, labels)
    if "confidence" in names:
        o = lax.map(lambda s: faithfulness.class_scores(
            apply_fn(faithfulness.explanation_images(images, s)), labels), sm)      # [K, B]
        out["confidence"] = jax.vmap(lambda c, o: c.add(y, o, valid))(counts["confidence"], o)
    if "road" in names:
        out.update(_road_update(settings, apply_fn, images, labels, y, sm, valid, counts))
    for mode in deletion_insertion.CAUSAL_MODES:
        if mode not in names:
            continue
        baseline = getattr(settings, f"{mode}_baseline")
        curves = lax.map(lambda s, mode=mode, baseline=baseline: deletion_insertion.causal_curves(
            apply_fn, images, s, labels, mode, steps=settings.causal_steps, baseline=baseline,
            chunk_size=settings.causal_chunk_size), sm)                      # [K, J + 1, B]
        out[mode] = jax.vmap(lambda c, z: c.add(z, valid))(counts[mode], curves)
    if "complexity" in names:
        out["complexity"] = jax.vmap(lambda c, s: c.add(s, valid))(counts["complexity"], sm)
    if "arcc" in names:
        if maps_fns is None or len(maps_fns) != sm.shape[0]:
            raise ValueError("faithfulness metric 'arcc' needs maps_fns, one per map kind")
        out.update(_arcc_update(settings, apply_fn, maps_fns, images, labels, sm, valid,
                                counts))
    return out


def _road_results(settings: EvalSettings, counts, i: int, kind: str) -> dict:
    res, means = {}, {}
    for order, percentiles in road_orders(settings):
        road = kind_slice(counts[f"road_{order}"], i).result()
        change, acc = np.asarray(road["score_change"]), np.asarray(road["accuracy"])
        for j, p in enumerate(percentiles):
            res[f"{kind}/road_{order}_p{p:g}"] = float(change[j])
            res[f"{kind}/road_{order}_p{p:g}_accuracy"] = float(acc[j])
        means[order] = road
        res[f"{kind}/road_{order}"] = float(np.mean(change))
        res[f"{kind}/road_{order}_accuracy"] = float(np.mean(acc))
        res[f"{kind}/road_{order}_unconverged"] = int(np.sum(np.asarray(road["unconverged"])))
    if settings.road_morf_percentiles == settings.road_lerf_percentiles:
        res[f"{kind}/road_combined"] = faithfulness.road_combined(means["morf"], means["lerf"])
    return res


def results(settings: EvalSettings, counts: Mapping[str, Any], i: int, kind: str) -> dict:
    """The flat results (module docstring) of map kind ``kind``, index ``i`` of the kinds."""
    names = settings.faithfulness
    res = {}
    for name in ("confidence", "complexity", "arcc"):
        if name in names:
            for key, value in kind_slice(counts[name], i).result().items():
                res[f"{kind}/{key}"] = float(np.asarray(value))
    if "road" in names:
        res.update(_road_results(settings, counts, i, kind))
    for mode in deletion_insertion.CAUSAL_MODES:
        if mode in names:
            auc = kind_slice(counts[mode], i).result()["auc"]
            res[f"{kind}/{mode}_auc"] = float(np.asarray(auc))
    return res
