"""The attention maps of a vision transformer: attention rollout and TS-CAM's semantic-coupled map.

Both read the attention probabilities ``[B, heads, N, N]`` that each block's attention module
sows as ``intermediates/.../attention`` (``models.deit``: ``blocks_{i}/attn/attention``), in
call order, from one ``model.apply(..., mutable=["intermediates"])``. The tokens are
``[prefix tokens, patch tokens]``: the patch grid ``(h, w)`` is the model's ``features`` grid
and the number of prefix tokens (class, distillation) is ``N - h w``; row 0 is the class token.

``layer``: ``"features"`` (default) uses every block; a module path (``"blocks_5"``) uses the
blocks up to and including it.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from infocam_jax import _checks
from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc.core import DEFAULT_LAYER, HIGHEST

ATTENTION = "attention"


def _attention_stack(model, variables, images, layer):
    """``(head-mean attention [L, B, N, N] float32, features [B, h, w, D], logits [B, M])``
    of the blocks up to ``layer`` (module docstring)."""
    (logits, features), state = model.apply(variables, images, train=False,
                                            mutable=["intermediates"])
    found = [("/".join(path[:-1]), value[0]) for path, value in
             flax.traverse_util.flatten_dict(dict(state.get("intermediates", {}))).items()
             if path[-1] == ATTENTION]
    if not found:
        raise ValueError("attention maps need a transformer whose attention modules sow "
                         "'attention' intermediates (models.create('deit_*', ...)); this model "
                         "sows none")
    if layer != DEFAULT_LAYER:
        inside = [i for i, (path, _) in enumerate(found)
                  if path == layer or path.startswith(layer + "/")]
        if not inside:
            blocks = tuple(dict.fromkeys(path.split("/")[0] for path, _ in found))
            raise ValueError(f"layer {layer!r} holds no attention module; valid layers: "
                             f"{', '.join((DEFAULT_LAYER,) + blocks)}")
        found = found[:inside[-1] + 1]
    probs = jnp.stack([jnp.mean(p.astype(jnp.float32), axis=1) for _, p in found])
    return probs, features, logits


def _patch_row(matrix, features):
    """Row 0 (the class token) of ``matrix [B, N, N]`` over the patch tokens -> ``[B, h, w]``."""
    b, h, w, _ = features.shape
    return matrix[:, 0, matrix.shape[-1] - h * w:].reshape(b, h, w)


@registry.register("rollout", "Attention rollout", family="attention")
def rollout(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
            relu: bool = True):
    """Attention rollout (Abnar & Zuidema, ACL 2020, "Quantifying attention flow in
    transformers").

    ``Ã_l = 0.5 mean_heads(A_l) + 0.5 I`` (the residual connection; rows still sum to 1) and
    ``R = Ã_L ⋯ Ã_1``; the map is the class token's row of ``R`` over the patch tokens.
    ``targets`` are checked but do not enter: rollout is class-agnostic.

    Args:
      model, variables, images, targets: as for :func:`~.gradient.gradcam`.
      layer: ``"features"`` (every block) or the last block to roll out (module docstring).
      relu: ``max(·, 0)`` (no effect: the map is non-negative).

    Returns:
      float32 ``[B, h, w]`` on the patch grid.
    """
    images, layer, targets, num_classes = _prepare(model, variables, images, targets, layer)
    probs, features, _ = _attention_stack(model, variables, images, layer)
    eye = jnp.eye(probs.shape[-1], dtype=jnp.float32)
    joint = 0.5 * probs[0] + 0.5 * eye
    for a in probs[1:]:
        joint = jnp.einsum("bij,bjk->bik", 0.5 * a + 0.5 * eye, joint, precision=HIGHEST)
    maps = _patch_row(joint, features)
    maps = jnp.maximum(maps, 0.0) if relu else maps
    return core.nan_where_invalid(maps, targets, num_classes)


@registry.register("tscam", "TS-CAM", family="attention")
def tscam(model, variables, images, targets, *, layer: str = DEFAULT_LAYER,
          relu: bool = False):
    """TS-CAM's semantic-coupled map (Gao et al., ICCV 2021, "TS-CAM: token semantic coupled
    attention map"; as its released code computes it at evaluation).

    ``M^c = (Σ_l mean_heads(A_l)[cls, patches]) ⊙ (F W[:, c] + b_c)``: the class token's
    attention to each patch summed over the blocks (the semantic-agnostic map), times the
    token-GAP head's class map of the final patch tokens ``F`` with its bias (TS-CAM's
    semantic-aware map; TS-CAM's head is a 3x3 convolution, ours the token-GAP Dense head, a
    1x1 one). As TS-CAM, no ReLU by default (its evaluation min-max normalises the map).

    Args:
      model: a transformer with the token-GAP head (``logits = GAP(features) @ head + b``).
      variables, images, targets: as for :func:`~.gradient.gradcam`.
      layer: ``"features"`` (every block) or the last block whose attention counts.
      relu: ``max(·, 0)`` of the map (default False).

    Returns:
      float32 ``[B, h, w]`` on the patch grid.
    """
    images, layer, targets, num_classes = _prepare(model, variables, images, targets, layer)
    if not getattr(model, "logits_from_gap", True):
        raise ValueError("tscam needs the token-GAP head (models.create('deit_*', ..., "
                         "head='tokens_gap')): its class maps are that head's")
    probs, features, _ = _attention_stack(model, variables, images, layer)
    head = variables["params"][core.HEAD]
    safe = jnp.clip(targets, 0, num_classes - 1)
    columns = jnp.take(head["kernel"], safe, axis=1).T  # [B, D]
    class_maps = jnp.einsum("bhwd,bd->bhw", features, columns, precision=HIGHEST)
    class_maps = class_maps + head["bias"][safe][:, None, None]
    maps = _patch_row(jnp.sum(probs, axis=0), features) * class_maps
    maps = jnp.maximum(maps, 0.0) if relu else maps
    return core.nan_where_invalid(maps, targets, num_classes)


def _prepare(model, variables, images, targets, layer):
    """``core.prepare`` with the layer "features" allowed for any head (no gradient through
    the head is taken here)."""
    core.check_model(model)
    images = core.check_images(images)
    layer = core.check_layer(layer)
    logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    batch, num_classes = logits.shape
    targets = _checks.check_labels(targets, batch, num_classes, name="targets",
                                   classes_from="the model's number of classes M")
    return images, layer, targets, num_classes
