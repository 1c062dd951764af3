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
its maps on import: :mod:`.gradient` (Grad-CAM, HiResCAM, Grad-CAM++, XGrad-CAM, LayerCAM,
Grad-CAM element-wise, Eigen-Grad-CAM, Seg-Eigen-CAM, FinerCAM, Smooth Grad-CAM++),
:mod:`.perturbation` (Score-CAM, SS-CAM, IS-CAM, Ablation-CAM), :mod:`.activation` (Eigen-CAM,
KPCA-CAM, FEM, RandomCAM), :mod:`.guided` (guided backpropagation, Guided Grad-CAM),
:mod:`.second_order` (ShapleyCAM: gradient and Hessian-vector product), :mod:`.fullgrad`
(FullGrad: the bias gradients of every layer, at the input resolution), :mod:`.attention`
(attention rollout, TS-CAM's map: transformers only, ValueError otherwise). Adding a map is one
function registered in its family's module, or one new module plus its import below.
The maps that offer pytorch-grad-cam's ``eigen_smooth`` (every one of its CAM classes that
reads the flag, Score-CAM, Ablation-CAM and FullGrad included) list it in their registry
``options``; torch-cam's Smooth Grad-CAM++, SS-CAM and IS-CAM have no such option.

Beside the maps:

* ``aug_smooth=True`` (any method, through :func:`compute` / :func:`jitted`): the map averaged
  over pytorch-grad-cam's six flipped / brightness-scaled views (:mod:`.augment`).
* ``IMAGE_METHODS`` (guided backpropagation, Guided Grad-CAM) return ``[B, H, W, C]`` at the
  input: registered with ``output="image"``, so they are not in ``METHOD_NAMES`` and the
  evaluation (which takes ``[B, h, w]`` map kinds) leaves them out.
* :func:`deep_feature_factorization` (:mod:`.factorization`): concepts and one map per concept
  (NMF of the batch's activations), not one map per target: not registered.

Left out, and why: pytorch-grad-cam's ``sobel_cam`` is an edge filter of the image (OpenCV
Sobel on the grey image), no function of the network or class, so no CAM of a classifier (a
baseline for faithfulness metrics at most); RefineCAM multiplies the min-max scaled maps of
several layers (its paper targets early-layer denoising), outside the one-layer ``layer=``
contract; SESS (the image resized to several scales, a sliding window's patches mapped
by a base method, weighted by their class scores, pasted back and fused) is a pipeline around a
base map with data-dependent patch counts per scale and optional score pre-filtering, not a
map of one layer; both stay with their peer until a batched, static-shape form is needed.

Targets (:mod:`.targets`): ``None`` (the default: the predicted class), int ``[B]``, a callable
of the logits, or (:func:`compute`) multi-label int ``[B, T]`` / bool ``[B, M]``.

The layer (``layer=``) is a path in the module tree (torch spellings such as ``"layer3[-1]"``
or ``"features.28"`` are translated, :mod:`.layer_names`):

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
from infocam_jax.maps.posthoc import gradient, perturbation, activation, guided  # noqa: I001
from infocam_jax.maps.posthoc import second_order, fullgrad, attention  # noqa: I001
from infocam_jax.maps.posthoc import augment, core, factorization, layer_names, registry, targets
from infocam_jax.maps.posthoc.activation import eigencam, fem, kpcacam, randomcam
from infocam_jax.maps.posthoc.attention import rollout, tscam
from infocam_jax.maps.posthoc.core import (DEFAULT_CHUNK_SIZE, DEFAULT_LAYER,
                                           activations_and_gradients, layer_paths)
from infocam_jax.maps.posthoc.factorization import deep_feature_factorization
from infocam_jax.maps.posthoc.gradient import (eigengradcam, finercam, gradcam, gradcamew,
                                               gradcampp, hirescam, layercam, segeigencam,
                                               smoothgradcampp, xgradcam)
from infocam_jax.maps.posthoc.guided import guided_backprop, guided_gradcam
from infocam_jax.maps.posthoc.perturbation import ablationcam, iscam, scorecam, sscam
from infocam_jax.maps.posthoc.registry import PosthocMap, compute, jitted, register
from infocam_jax.maps.posthoc.second_order import shapleycam
from infocam_jax.maps.posthoc.targets import Score

# The maps of any backbone; the attention maps need a transformer (models.deit).
ATTENTION_METHODS = registry.names("attention")
METHOD_NAMES = tuple(n for n in registry.names() if n not in ATTENTION_METHODS)
GRADIENT_METHODS = registry.names("gradient")
IMAGE_METHODS = registry.names(output="image")
DISPLAY_NAMES = registry.display_names()

# FullGrad's function is ``fullgrad.fullgrad`` (the name ``fullgrad`` here is its module).
__all__ = [
    "ATTENTION_METHODS", "DEFAULT_CHUNK_SIZE", "DEFAULT_LAYER", "DISPLAY_NAMES",
    "GRADIENT_METHODS", "IMAGE_METHODS", "METHOD_NAMES", "PosthocMap", "Score", "ablationcam",
    "activation", "activations_and_gradients", "attention", "augment", "compute", "core",
    "deep_feature_factorization", "eigencam", "eigengradcam", "factorization", "fem",
    "finercam", "fullgrad", "gradcam", "gradcamew", "gradcampp", "gradient", "guided",
    "guided_backprop", "guided_gradcam", "hirescam", "iscam", "jitted", "kpcacam",
    "layer_names", "layer_paths", "layercam", "perturbation", "randomcam", "register",
    "registry", "rollout", "scorecam", "second_order", "segeigencam", "shapleycam",
    "smoothgradcampp", "sscam", "targets", "tscam", "xgradcam",
]
