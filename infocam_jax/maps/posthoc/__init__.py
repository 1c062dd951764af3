"""Post-hoc class activation maps of any backbone, one module per method (family).

Each method is a pure function ``f(model, variables, images, targets, *, layer=..., ...)`` of a
Flax model whose ``apply(variables, images, train=False)`` returns ``(logits [B, M], features
[B, h, w, K])`` (every ``infocam_jax.models`` backbone with the GAP head, i.e. a method without a head;
ACoL and SPG networks are refused with a ValueError naming the method). It returns float32 maps ``[B, h', w']``
at the chosen layer's resolution, with the same shape contract as :func:`infocam_jax.maps.cams.cam`,
so ``boxes.scoremaps`` and the eval step take them unchanged. Everything traces under ``jit``
(``model`` and the keyword options are static) and works on the whole batch at once.

Layout: :mod:`.core` (reading, perturbing and differentiating a layer: the shared
``(activations, gradients)`` core), :mod:`.registry` (one :class:`~.registry.PosthocMap` per
method; :func:`compute`, :func:`jitted`), and one module per method or family, each registering
its maps on import: :mod:`.gradient` (Grad-CAM, HiResCAM, Grad-CAM++, XGrad-CAM, LayerCAM),
:mod:`.perturbation` (Score-CAM), :mod:`.activation` (Eigen-CAM), :mod:`.attention`
(attention rollout, TS-CAM's map: transformers only, ValueError otherwise). Adding a map is
one function registered in its family's module, or one new module plus its import below.

The layer (``layer=``) is a path in the module tree:

* ``"features"`` (the default): the map global average pooling consumes, the model's second
  output. Its gradient is the vjp through the head module ``"head"``: the models compute
  ``logits = head(mean(features, (h, w)))``, so ``∂y/∂features[b,i,j,k] = ∂y/∂pooled[b,k] / Z``
  exactly (the vjp of the mean).
* any submodule's output, written as the ``/``-joined names of the module path from the top
  module: ``"conv5_3"``, ``"conv6"`` (VGG16-GAP, before its ReLU), ``"layer4_2"`` (ResNet50's
  last block, equal to ``"features"``), ``"layer3_5"``, ``"layer4_2/bn3"``, ``"adl_3M"``, ... .
  The submodule's ``__call__`` output must be one ``[B, h, w, K]`` array; it is read and
  perturbed through ``flax.linen.intercept_methods``. :func:`layer_paths` lists the valid
  paths of a model.
* a transformer block (``"blocks_3"`` of ``models.deit``): its tokens ``[B, N, D]`` are read on
  the patch grid ``[B, h, w, D]``, the class / distillation tokens dropped
  (``core.token_grid``, as pytorch-grad-cam's ``vit_reshape_transform``).
"""
# Registration order is the order of ``METHOD_NAMES`` (and of the tables' rows).
from infocam_jax.maps.posthoc import gradient, perturbation, activation  # noqa: I001
from infocam_jax.maps.posthoc import attention  # noqa: I001
from infocam_jax.maps.posthoc import core, registry
from infocam_jax.maps.posthoc.activation import eigencam
from infocam_jax.maps.posthoc.attention import rollout, tscam
from infocam_jax.maps.posthoc.core import (DEFAULT_CHUNK_SIZE, DEFAULT_LAYER,
                                           activations_and_gradients, layer_paths)
from infocam_jax.maps.posthoc.gradient import gradcam, gradcampp, hirescam, layercam, xgradcam
from infocam_jax.maps.posthoc.perturbation import scorecam
from infocam_jax.maps.posthoc.registry import PosthocMap, compute, jitted, register

# The maps of any backbone; the attention maps need a transformer (models.deit).
ATTENTION_METHODS = registry.names("attention")
METHOD_NAMES = tuple(n for n in registry.names() if n not in ATTENTION_METHODS)
GRADIENT_METHODS = registry.names("gradient")
DISPLAY_NAMES = registry.display_names()

__all__ = [
    "ATTENTION_METHODS",
    "DEFAULT_CHUNK_SIZE", "DEFAULT_LAYER", "DISPLAY_NAMES", "GRADIENT_METHODS", "METHOD_NAMES",
    "PosthocMap", "activation", "activations_and_gradients", "compute", "core", "eigencam",
    "gradcam", "gradcampp", "gradient", "hirescam", "jitted", "layer_paths", "layercam",
    "perturbation", "register", "registry", "scorecam", "xgradcam",
    "attention", "rollout", "tscam",
]
