"""Class activation maps: CAM, infoCAM, infoCAM+ and their multi-label variants.

All functions are pure ``jax.numpy``: they work under ``jit`` and ``vmap``, have static output
shapes, and compute in float32.

Notation (the paper, Qin, Kim & Gedeon, §2.1-2.2):
  * ``g``: features ``[B, h, w, K]`` (the map that global average pooling consumes);
  * ``W``: classifier kernel ``[K, M]`` (Flax Dense layout, features x classes), ``w^y = W[:, y]``;
  * ``M_y(a, b) = Σ_k W[k, y] g(a, b, k)``: the class activation map of class ``y`` (eq. 1).
No bias term enters any map (the authors' code drops it too).

Checks. Shapes, ranks, dtypes and the static arguments (``region_size``, ``padding``, ``rival``,
``head``) are checked at trace time and raise ``ValueError`` naming the argument. Checks on
*values* (labels in ``[0, M)``, priors in ``(0, 1)``) run only when the values are concrete
(eager calls with NumPy/JAX arrays); under ``jit``/``vmap`` they are traced and cannot be
inspected, so no error is raised there. Instead an out-of-range label selects a NaN weight
vector, so its map is all-NaN rather than silently the map of another class.

Region sums use ``lax.reduce_window`` (a sliding R x R sum with zero padding), not a Python loop.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax import _checks

__all__ = [
    "FUSIONS",
    "all_maps",
    "cam",
    "class_maps",
    "fuse",
    "fused_maps",
    "infocam",
    "infocam_plus",
    "multilabel_cam",
    "multilabel_infocam",
    "region_sum",
]

_PADDINGS = ("same", "full")
_RIVALS = ("image", "region")
_HEADS = ("sigmoid", "pc_sigmoid")
FUSIONS = ("single", "max_minmax")
_HIGHEST = lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
_is_concrete = _checks.is_concrete


def _check_features_kernel(features, kernel):
    """Checks ``features [B,h,w,K]`` and ``kernel [K,M]``; returns them as float32 arrays."""
    features = jnp.asarray(features)
    kernel = jnp.asarray(kernel)
    if features.ndim != 4:
        raise ValueError(
            f"features must have shape [B, h, w, K] (rank 4), got shape {features.shape}")
    if kernel.ndim != 2:
        raise ValueError(f"kernel must have shape [K, M] (rank 2), got shape {kernel.shape}")
    if kernel.shape[0] != features.shape[-1]:
        raise ValueError(
            f"kernel must have shape [K, M] with K = features.shape[-1] = {features.shape[-1]}, "
            f"got shape {kernel.shape}")
    return features.astype(jnp.float32), kernel.astype(jnp.float32)


def _check_labels(labels, batch: int, num_classes: int, name: str = "labels"):
    """Checks ``labels [B]`` int (values only when concrete); returns an int32 array."""
    return _checks.check_labels(labels, batch, num_classes, name=name,
                                classes_from="the kernel's M")


def _check_region_size(region_size) -> int:
    if isinstance(region_size, (bool, np.bool_)) or not isinstance(
            region_size, (int, np.integer)):
        raise ValueError(
            f"region_size must be a Python int >= 1 (static), got {region_size!r}")
    if region_size < 1:
        raise ValueError(f"region_size must be >= 1, got {region_size}")
    return int(region_size)


def _check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _columns(kernel, labels):
    """``kernel[:, labels].T`` as ``[B, K]``; NaN rows for out-of-range labels (under jit)."""
    num_classes = kernel.shape[1]
    safe = jnp.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    return jnp.take(kernel, safe, axis=1, mode="fill", fill_value=jnp.nan).T


def _weighted_map(features, weights):
    """``Σ_k weights[b, k] g[b, a, c, k]``: ``[B,h,w,K] x [B,K] -> [B,h,w]``."""
    return jnp.einsum("bhwk,bk->bhw", features, weights, precision=_HIGHEST)


# --------------------------------------------------------------------------------------------
# Region sums
# --------------------------------------------------------------------------------------------
def _region_pads(region_size: int, padding: str):
    if padding == "full":
        return (region_size - 1, region_size - 1)
    low = (region_size - 1) // 2
    return (low, region_size - 1 - low)


def _region_sum_axes12(x, region_size: int, padding: str):
    """Sliding R x R sum over axes 1 and 2 of ``x`` (any rank >= 3), zero padding."""
    pads = [(0, 0)] * x.ndim
    pads[1] = _region_pads(region_size, padding)
    pads[2] = _region_pads(region_size, padding)
    window = [1] * x.ndim
    window[1] = window[2] = region_size
    return lax.reduce_window(x, jnp.array(0, x.dtype), lax.add, tuple(window),
                             (1,) * x.ndim, pads)


def region_sum(maps, region_size: int, padding: str = "same"):
    """Sums a map over every R x R square region (zero outside the map).

    With ``R = region_size`` and ``m = maps[b]`` (zero outside ``[0,h) x [0,w)``):

    * ``padding="full"`` (the authors' released code: a convolution with an R x R ones filter
      and padding R-1): output ``[B, h+R-1, w+R-1]``,
      ``out[i, j] = Σ_{a=i-R+1..i} Σ_{c=j-R+1..j} m[a, c]``.
      Every region that overlaps the map at all gets one output value.
    * ``padding="same"``: output ``[B, h, w]`` aligned with the feature grid,
      ``out[i, j] = Σ_{a=i-⌊(R-1)/2⌋..i+⌈(R-1)/2⌉} Σ_{c=j-⌊(R-1)/2⌋..j+⌈(R-1)/2⌉} m[a, c]``,
      i.e. XLA/TensorFlow "SAME" padding (low pad ``(R-1)//2``, high pad ``R//2``). For odd R
      the region is centred on ``(i, j)``; for even R it extends one more cell towards the
      higher indices (R=2: rows ``i, i+1`` and columns ``j, j+1``). Equivalently
      ``same = full[:, R//2 : R//2 + h, R//2 : R//2 + w]``.

    ``R = 1`` is the identity for both paddings.

    Args:
      maps: float ``[B, h, w]``.
      region_size: static Python int ``R >= 1``.
      padding: ``"same"`` or ``"full"`` (static).

    Returns:
      float32 ``[B, h, w]`` ("same") or ``[B, h+R-1, w+R-1]`` ("full").

    Raises:
      ValueError: ``maps`` not rank 3, ``region_size`` not an int >= 1, unknown ``padding``.
    """
    maps = jnp.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape [B, h, w] (rank 3), got shape {maps.shape}")
    region_size = _check_region_size(region_size)
    _check_choice(padding, "padding", _PADDINGS)
    return _region_sum_axes12(maps.astype(jnp.float32), region_size, padding)


# --------------------------------------------------------------------------------------------
# Single-label maps
# --------------------------------------------------------------------------------------------
def cam(features, kernel, labels):
    """Class activation map of each image's label (eq. 1).

    ``CAM[b, a, c] = M_{y_b}(a, c) = Σ_k W[k, y_b] g[b, a, c, k]``; summed over ``(a, c)`` it
    is the label's logit without bias (eq. 2, up to the GAP's 1/(h·w)).

    Args:
      features: float ``[B, h, w, K]``.
      kernel: float ``[K, M]``.
      labels: int ``[B]`` in ``[0, M)`` (checked when concrete; NaN map under jit otherwise).

    Returns:
      float32 ``[B, h, w]``.
    """
    features, kernel = _check_features_kernel(features, kernel)
    labels = _check_labels(labels, features.shape[0], kernel.shape[1])
    return _weighted_map(features, _columns(kernel, labels))


def _infocam_weights(kernel, labels):
    """``w^y - mean_{y' != y} w^{y'} = (M w^y - Σ_{y'} w^{y'}) / (M - 1)`` as ``[B, K]``."""
    num_classes = kernel.shape[1]
    total = jnp.sum(kernel, axis=1)
    return (num_classes * _columns(kernel, labels) - total[None, :]) / (num_classes - 1)


def infocam(features, kernel, labels, region_size: int, padding: str = "same"):
    """infoCAM: region-summed PMI difference against the mean of the other labels (§2.2).

    ``PMI(x, y) = n_y - log Σ_{y'} exp(n_{y'}) + log M`` with ``n_y = Σ_{a,c} M_y(a,c)``; the
    normaliser cancels in ``PMI(x, y) - 1/(M-1) Σ_{y'≠y} PMI(x, y')``, leaving a sum of
    point-wise terms. Summed over a region ``R`` instead of the whole grid:

    ``infoCAM_y(R) = Σ_{(a,c)∈R} (w^y - 1/(M-1) Σ_{y'≠y} w^{y'}) · g(a, c)``,

    computed as :func:`region_sum` of the point-wise map.

    Args:
      features: float ``[B, h, w, K]``.
      kernel: float ``[K, M]`` with ``M >= 2``.
      labels: int ``[B]`` in ``[0, M)``.
      region_size: static int ``R >= 1``.
      padding: ``"same"`` (``[B,h,w]``) or ``"full"`` (``[B,h+R-1,w+R-1]``); see region_sum.

    Returns:
      float32 ``[B, h, w]`` or ``[B, h+R-1, w+R-1]``.
    """
    features, kernel = _check_features_kernel(features, kernel)
    if kernel.shape[1] < 2:
        raise ValueError(f"kernel must have M >= 2 classes for infocam, got shape {kernel.shape}")
    labels = _check_labels(labels, features.shape[0], kernel.shape[1])
    region_size = _check_region_size(region_size)
    _check_choice(padding, "padding", _PADDINGS)
    pointwise = _weighted_map(features, _infocam_weights(kernel, labels))
    return _region_sum_axes12(pointwise, region_size, padding)


def _image_rival(features, kernel, logits):
    """The class with the lowest whole-image score: from ``logits`` or ``GAP(g) @ W``."""
    batch, num_classes = features.shape[0], kernel.shape[1]
    if logits is None:
        scores = jnp.matmul(jnp.mean(features, axis=(1, 2)), kernel, precision=_HIGHEST)
    else:
        scores = jnp.asarray(logits)
        if scores.shape != (batch, num_classes):
            raise ValueError(
                f"logits must have shape [B, M] = ({batch}, {num_classes}), got shape "
                f"{scores.shape}")
    return jnp.argmin(scores, axis=-1).astype(jnp.int32)


def infocam_plus(features, kernel, labels, region_size: int, padding: str = "same",
                 rival: str = "image", logits=None):
    """infoCAM+: region-summed PMI difference against the least-likely label (eq. 3).

    ``infoCAM+_y(R) = Σ_{(a,c)∈R} (w^y - w^{y'}) · g(a, c)`` where the rival ``y'`` is

    * ``rival="image"``: the class with the lowest whole-image score,
      ``y' = argmin_m logits[b, m]`` when ``logits`` is given (the model's outputs, bias
      included, as in the authors' code), else ``argmin_m (GAP(g) @ W)[b, m]``; one rival per
      image. The map is region_sum of ``(w^y - w^{y'})·g``.
    * ``rival="region"``: equation 3 read literally, one rival per region,
      ``y'(R) = argmin_m Σ_{(a,c)∈R} w^m · g(a, c)``, so
      ``infoCAM+_y(R) = S_y(R) - min_m S_m(R)`` with ``S_m = region_sum(M_m)`` (``m`` ranges
      over all classes, ``y`` included, so the value is >= 0). ``logits`` is ignored.

    If ``y'`` equals ``y`` the difference is 0 there.

    Args:
      features: float ``[B, h, w, K]``.
      kernel: float ``[K, M]``.
      labels: int ``[B]`` in ``[0, M)``.
      region_size: static int ``R >= 1``.
      padding: ``"same"`` or ``"full"`` (see :func:`region_sum`).
      rival: ``"image"`` or ``"region"`` (static).
      logits: optional float ``[B, M]`` (``rival="image"`` only).

    Returns:
      float32 ``[B, h, w]`` ("same") or ``[B, h+R-1, w+R-1]`` ("full").
    """
    features, kernel = _check_features_kernel(features, kernel)
    labels = _check_labels(labels, features.shape[0], kernel.shape[1])
    region_size = _check_region_size(region_size)
    _check_choice(padding, "padding", _PADDINGS)
    _check_choice(rival, "rival", _RIVALS)
    if rival == "image":
        rivals = _image_rival(features, kernel, logits)
        weights = _columns(kernel, labels) - _columns(kernel, rivals)
        return _region_sum_axes12(_weighted_map(features, weights), region_size, padding)
    own = _region_sum_axes12(_weighted_map(features, _columns(kernel, labels)), region_size,
                             padding)
    return own - jnp.min(_all_class_region_sums(features, kernel, region_size, padding), axis=-1)


def _all_class_region_sums(features, kernel, region_size, padding):
    """``S_m = region_sum(M_m)`` for every class: ``[B, h', w', M]``."""
    class_maps = jnp.einsum("bhwk,km->bhwm", features, kernel, precision=_HIGHEST)
    return _region_sum_axes12(class_maps, region_size, padding)


def all_maps(features, kernel, labels, region_size: int, padding: str = "same",
             rival: str = "image", logits=None):
    """CAM, infoCAM and infoCAM+ of one label per image, from one set of features.

    For evaluation: run the model once, then call this for the ground-truth labels and for the
    predicted labels. Same definitions and arguments as :func:`cam`, :func:`infocam` and
    :func:`infocam_plus`; the label's weight column is gathered once.

    Args:
      features: float ``[B, h, w, K]``.
      kernel: float ``[K, M]``, ``M >= 2``.
      labels: int ``[B]`` in ``[0, M)``.
      region_size, padding: as in :func:`region_sum` (used by infoCAM and infoCAM+ only).
      rival, logits: as in :func:`infocam_plus`.

    Returns:
      dict with ``"cam"`` float32 ``[B, h, w]`` (no region sum) and ``"infocam"``,
      ``"infocam_plus"`` float32 ``[B, h', w']`` (``h' = h`` for "same", ``h+R-1`` for
      "full").
    """
    features, kernel = _check_features_kernel(features, kernel)
    if kernel.shape[1] < 2:
        raise ValueError(f"kernel must have M >= 2 classes, got shape {kernel.shape}")
    labels = _check_labels(labels, features.shape[0], kernel.shape[1])
    region_size = _check_region_size(region_size)
    _check_choice(padding, "padding", _PADDINGS)
    _check_choice(rival, "rival", _RIVALS)
    num_classes = kernel.shape[1]
    own = _columns(kernel, labels)
    total = jnp.sum(kernel, axis=1)[None, :]
    cam_map = _weighted_map(features, own)
    info_weights = (num_classes * own - total) / (num_classes - 1)
    info = _region_sum_axes12(_weighted_map(features, info_weights), region_size, padding)
    if rival == "image":
        rivals = _image_rival(features, kernel, logits)
        plus_pointwise = _weighted_map(features, own - _columns(kernel, rivals))
        plus = _region_sum_axes12(plus_pointwise, region_size, padding)
    else:
        sums = _all_class_region_sums(features, kernel, region_size, padding)
        plus = _region_sum_axes12(cam_map, region_size, padding) - jnp.min(sums, axis=-1)
    return {"cam": cam_map, "infocam": info, "infocam_plus": plus}


# --------------------------------------------------------------------------------------------
# Several classifier branches (WSOL methods): per-branch maps and their fusion
# --------------------------------------------------------------------------------------------
def class_maps(features, kernel):
    """Every class's activation map ``S_m(a, c) = Σ_k g(a, c, k) W[k, m]`` (eq. 1, no bias).

    Args:
      features: float ``[B, h, w, K]``; kernel: float ``[K, M]``.

    Returns:
      float32 ``[B, h, w, M]``.
    """
    features, kernel = _check_features_kernel(features, kernel)
    return jnp.einsum("bhwk,km->bhwm", features, kernel, precision=_HIGHEST)


def _minmax_hw(maps):
    """``(m - min m) / (max m - min m)`` over the last two axes; 0 where the map is constant."""
    lo = jnp.min(maps, axis=(-2, -1), keepdims=True)
    span = jnp.max(maps, axis=(-2, -1), keepdims=True) - lo
    return jnp.where(span > 0, (maps - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def fuse(branch_maps, fusion: str = "single"):
    """One map from the maps of several classifier branches (the method's fusion rule).

    With ``m_i`` the map of branch ``i`` (``[B, h, w]``, one image's map of one class):

    * ``"single"``: ``F = m_0`` (CAM, ADL, HaS, CutMix, SPG: one class head);
    * ``"max_minmax"`` (ACoL, the reference's ``return_cam``): each branch's map min-max
      normalised over space, image by image, then the elementwise maximum,

          F(a, c) = max_i (m_i(a, c) - min m_i) / (max m_i - min m_i),

      with min / max over the ``h x w`` positions of that image (the reference's
      ``normalize_tensor`` normalises each class channel of ``[B, M, h, w]`` over its
      ``h·w`` positions, no epsilon). Where a branch's map is constant (max = min) we use 0
      for it; the reference divides 0 by 0 there (NaN, which ``torch.max`` propagates).
      ``F`` lies in [0, 1].

    Args:
      branch_maps: sequence of float ``[B, h, w]`` maps of equal shape, one per branch.
      fusion: one of :data:`FUSIONS` (static).

    Returns:
      float32 ``[B, h, w]``.
    """
    _check_choice(fusion, "fusion", FUSIONS)
    branch_maps = [jnp.asarray(m, jnp.float32) for m in branch_maps]
    if not branch_maps:
        raise ValueError("branch_maps must hold at least one map")
    shapes = {m.shape for m in branch_maps}
    if len(shapes) != 1:
        raise ValueError(f"branch_maps must have one shape, got shapes {sorted(shapes)}")
    if fusion == "single":
        return branch_maps[0]
    return jnp.max(jnp.stack([_minmax_hw(m) for m in branch_maps]), axis=0)


def fused_maps(branches, labels, region_size: int, padding: str = "same",
               rival: str = "image", fusion: str = "single"):
    """CAM, infoCAM and infoCAM+ of a method with one or several classifier branches.

    For each branch ``i`` (``features`` ``g_i [B, h, w, K_i]``, ``kernel`` ``W_i [K_i, M]``,
    ``logits`` ``[B, M]`` or None) the maps are :func:`all_maps` on that branch alone: for a
    1x1-convolution class head the class map of ``c`` is ``g_i · w_i^c`` (+ a bias that no
    map uses), so infoCAM_i / infoCAM+_i are eq. 2-3 with branch ``i``'s own features, kernel
    and (for infoCAM+'s image rival) logits. Each kind is then fused by :func:`fuse`:

        K(a, c) = fuse_i(K_i)(a, c)     for K in {CAM, infoCAM, infoCAM+},

    i.e. for ACoL (``"max_minmax"``) ``K = max_i minmax_hw(K_i)``.

    Args:
      branches: sequence of objects with ``features``, ``kernel`` and ``logits`` attributes
        (``models.Branch``), one per branch.
      labels: int ``[B]`` in ``[0, M)``, the class whose maps are read.
      region_size, padding, rival: as in :func:`all_maps`.
      fusion: one of :data:`FUSIONS` (``models.readout(...).fusion``).

    Returns:
      ``{"cam", "infocam", "infocam_plus"}`` each float32 ``[B, h, w]`` (``[B, h', w']`` for
      the region maps with ``padding="full"``).
    """
    _check_choice(fusion, "fusion", FUSIONS)
    branches = tuple(branches)[:1] if fusion == "single" else tuple(branches)
    per_branch = [all_maps(b.features, b.kernel, labels, region_size, padding=padding,
                           rival=rival, logits=b.logits) for b in branches]
    if not per_branch:
        raise ValueError("branches must hold at least one branch")
    return {k: fuse([maps[k] for maps in per_branch], fusion) for k in per_branch[0]}


# --------------------------------------------------------------------------------------------
# Multi-label maps
# --------------------------------------------------------------------------------------------
def multilabel_cam(features, kernel, label_index):
    """CAM of one label per image for a multi-label (sigmoid) head: ``M_j(a, c) = w^j · g(a, c)``.

    Identical to :func:`cam` with ``labels = label_index``; the name states the intent.

    Args:
      features: float ``[B, h, w, K]``.
      kernel: float ``[K, M]`` (one column per label).
      label_index: int ``[B]`` in ``[0, M)``, the label whose map is wanted for each image.

    Returns:
      float32 ``[B, h, w]``.
    """
    features, kernel = _check_features_kernel(features, kernel)
    label_index = _check_labels(label_index, features.shape[0], kernel.shape[1], "label_index")
    return _weighted_map(features, _columns(kernel, label_index))


def multilabel_infocam(features, kernel, label_index, region_size: int, padding: str = "same",
                       head: str = "sigmoid", prior=None):
    """infoCAM for a multi-label head: each label a binary softmax over {present, absent}.

    Derivation. Label ``j`` is a two-outcome classifier with logit ``n_j = Σ_{a,c} M_j(a, c)``
    (bias dropped) for "present" and the constant logit 0 for "absent".

    * ``head="sigmoid"``: ``p(present|x) = σ(n_j) = e^{n_j} / (e^{n_j} + e^0)``, so with
      ``Z = log(e^{n_j} + 1)`` and two outcomes (``log M = log 2``)
      ``PMI(x, present) = n_j - Z + log 2`` and ``PMI(x, absent) = 0 - Z + log 2``.
    * ``head="pc_sigmoid"`` (PC-softmax over the two outcomes, priors ``π_j`` and ``1 - π_j``):
      ``p(present|x) = π_j e^{n_j} / (π_j e^{n_j} + (1 - π_j))`` and the PMI is
      ``log p(outcome|x) / p(outcome)``: with ``Z' = log(π_j e^{n_j} + 1 - π_j)``,
      ``PMI(x, present) = n_j - Z'`` and ``PMI(x, absent) = 0 - Z'``.

    With two outcomes the "mean over the other labels" of infoCAM and the "least likely label"
    of infoCAM+ are both the single other outcome, so in both heads the normaliser (and the
    prior) cancels: ``Diff PMI = PMI(present) - PMI(absent) = n_j = Σ_{a,c} w^j · g(a, c)``.
    Restricting the sum to a region ``R`` gives

    ``infoCAM_j(R) = Σ_{(a,c)∈R} w^j · g(a, c) = region_sum(M_j)(R)``,

    i.e. the region-summed CAM of label ``j`` (this agrees with the issue's expectation and is
    what the tests check). ``prior`` is therefore validated but does not change the map.

    Args:
      features: float ``[B, h, w, K]``.
      kernel: float ``[K, M]``.
      label_index: int ``[B]`` in ``[0, M)``.
      region_size: static int ``R >= 1``.
      padding: ``"same"`` or ``"full"`` (see :func:`region_sum`).
      head: ``"sigmoid"`` or ``"pc_sigmoid"`` (static).
      prior: ``pc_sigmoid`` only, optional float ``[M]`` of label priors in ``(0, 1)``
        (checked when concrete); ignored by the maths, see above.

    Returns:
      float32 ``[B, h, w]`` ("same") or ``[B, h+R-1, w+R-1]`` ("full").
    """
    features, kernel = _check_features_kernel(features, kernel)
    label_index = _check_labels(label_index, features.shape[0], kernel.shape[1], "label_index")
    region_size = _check_region_size(region_size)
    _check_choice(padding, "padding", _PADDINGS)
    _check_choice(head, "head", _HEADS)
    if prior is not None:
        if head != "pc_sigmoid":
            raise ValueError(f"prior is only used with head='pc_sigmoid', got head={head!r}")
        prior = jnp.asarray(prior)
        if prior.shape != (kernel.shape[1],):
            raise ValueError(
                f"prior must have shape [M] = ({kernel.shape[1]},), got shape {prior.shape}")
        if _is_concrete(prior):
            p = np.asarray(prior, np.float64)
            if not np.all((p > 0) & (p < 1)):
                raise ValueError(f"prior must lie in (0, 1), got values in [{p.min()}, {p.max()}]")
    pointwise = _weighted_map(features, _columns(kernel, label_index))
    return _region_sum_axes12(pointwise, region_size, padding)
