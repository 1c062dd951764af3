"""Faithfulness metrics of explanation maps: average drop / increase in confidence, ROAD, and
the map's complexity (deletion / insertion: ``infocam_jax.metrics.deletion_insertion``).

Every metric is a streaming count pytree (``flax.struct.dataclass``), like the counters of
``infocam_jax.metrics``: add batches with ``a.merge(b)``, sum devices with ``lax.psum`` or on
the host, read fractions with ``.result()`` (NaN when nothing was counted). A ``valid [B]``
mask makes padded examples count zero times. All functions are pure ``jax.numpy`` and jit;
static settings (percentiles, removal order) live in the pytree structure.

Notation: images ``I`` float ``[B, H, W, C]`` as the model sees them (normalised); score maps
``L`` float ``[B, H, W]`` in [0, 1] (the evaluation's upsampled, normalised maps,
``boxes.scoremaps``); ``c`` the explained class of each image (the evaluation explains the
ground-truth class); the *score* of class ``c`` is its softmax probability
``Y_c = softmax(f(I))_c``.

Average drop and increase in confidence (Chattopadhay et al., "Grad-CAM++", WACV 2018, §6.1):
the explanation map is the image multiplied by the upsampled map, ``E_c = L_c ∘ I`` (per pixel,
every channel; :func:`explanation_images`), ``O_c = softmax(f(E_c))_c``, and

  * Average Drop = (1/N) Σ_i max(0, Y_c^i − O_c^i) / Y_c^i   (the paper's value ×100 is a %);
  * Increase in Confidence = (1/N) Σ_i 1[Y_c^i < O_c^i].

(An image with ``Y_c = 0``, float underflow only, adds 0 to the drop.) pytorch-grad-cam's
``DropInConfidence`` / ``IncreaseInConfidence`` with ``ClassifierOutputSoftmaxTarget`` return
``max(0, Y_c − O_c)`` (not divided by ``Y_c``) and ``1[O_c > Y_c]`` per image on
``input_tensor * cam``, and their base ``CamMultImageConfidenceChange`` the signed change
``O_c − Y_c``; :class:`ConfidenceCounts` also keeps the sums of these two
(``mean_absolute_drop``, ``mean_confidence_change``).

Complexity (Rong et al.'s ARCC, pytorch-grad-cam's ``metrics.arcc.Complexity``): the mean of
``|L|`` over the pixels of each map, averaged over images (:class:`ComplexityCounts`); with
maps in [0, 1] it is the fraction of the image the map marks, 0 for an all-zero map.

ROAD, RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient
Evaluation Strategy for Attribution Methods", ICML 2022): a fraction of the pixels, the most
relevant first (MoRF) or the least relevant first (LeRF), is removed and replaced by *noisy
linear imputation* (their §4 and released ``imputations.py``, which pytorch-grad-cam's
``metrics/road.py`` carries): every removed pixel equals the weighted mean of its 8 neighbours
(removed or not) that lie inside the image, weights ``1/6`` for the 4 edge neighbours and
``1/12`` for the 4 diagonal ones, normalised by the weight of the in-image neighbours; i.e. for
each removed pixel ``p`` (set ``R``) and each channel::

    S_p x_p − Σ_{q ∈ N(p) ∩ R} w_pq x_q = Σ_{q ∈ N(p) \\ R} w_pq I_q,   S_p = Σ_{q ∈ N(p)} w_pq,

a sparse symmetric system in the removed pixels (:func:`linear_imputation`); then i.i.d.
Gaussian noise of standard deviation ``noise`` (0.01, absolute, as both implementations) is
added to each imputed value (:func:`noisy_linear_imputation`). Which pixels are removed follows
pytorch-grad-cam's ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` with a percentile
``p`` (:func:`road_keep_mask`): MoRF keeps ``L < q_p(L)``, LeRF keeps ``1 − L < q_p(1 − L)``,
where ``q_p`` is the p-th percentile of the image's map (``np.percentile``, linear
interpolation); every other pixel is removed, i.e. about ``(100 − p)`` % of the pixels: the
default MoRF ``p = 80`` removes the 20 % most relevant pixels, the default LeRF ``p = 20``
removes the 80 % least relevant. :class:`RoadCounts` counts, per percentile, the paper's measure
(top-1 accuracy of the model on the imputed images, ``accuracy``) and pytorch-grad-cam's
(the change of the class score, ``O_c − Y_c``, mean over images, ``score_change``).
pytorch-grad-cam's ``ROADCombined`` is ``(LeRF − MoRF) / 2`` of the score changes averaged over
the same percentiles (:func:`road_combined`).

Solver. The system is symmetric positive definite when every connected region of removed pixels
touches a kept pixel (it is weakly diagonally dominant, strictly so next to a kept pixel); it is
solved for all images and channels at once by Jacobi-preconditioned conjugate gradients on the
full pixel grid (kept pixels are identity rows), each system with its own step sizes, until every
relative residual ``||r|| / ||b||`` is below ``tol`` (default 1e-5) or ``max_iterations`` steps.
A system still above ``tol`` at the cap has not converged: on concrete inputs
:func:`noisy_linear_imputation`, :func:`road_images` and :func:`road_counts` raise
:class:`ImputationNotConverged`; traced (under ``jit``) they cannot raise, and
:func:`road_counts` counts such images instead (``RoadCounts.unconverged``, ``unconverged`` in
its results), as does :meth:`RoadCounts.add` given ``road_images(..., with_residual=True)``'s
residuals; :func:`linear_imputation` returns each image's residual.
If every pixel of an image is removed (a constant map removes all of them under MoRF), the
system is singular; the imputation is then defined as 0 (the normalised image's mean colour)
before the noise (the CG iterate from 0 with a zero right-hand side). The noise of each image is
drawn from ``fold_in(key, h)`` with ``h`` an order-free integer hash of the image's bits and
label, so results do not depend on batch composition, padding or device count.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax import _checks

__all__ = [
    "DEFAULT_LERF_PERCENTILES",
    "DEFAULT_MORF_PERCENTILES",
    "ImputationNotConverged",
    "NEIGHBOUR_WEIGHTS",
    "ROAD_ORDERS",
    "ComplexityCounts",
    "ConfidenceCounts",
    "RoadCounts",
    "class_scores",
    "complexity_counts",
    "confidence_counts",
    "explanation_images",
    "linear_imputation",
    "noisy_linear_imputation",
    "road_combined",
    "road_counts",
    "road_images",
    "road_keep_mask",
]

# ((dy, dx), weight): 1/6 for the 4 edge neighbours, 1/12 for the 4 diagonals (sum 1).
NEIGHBOUR_WEIGHTS = tuple(((dy, dx), (1 / 12 if dy and dx else 1 / 6))
                          for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
ROAD_ORDERS = ("morf", "lerf")
# pytorch-grad-cam's ROADMostRelevantFirst / ROADLeastRelevantFirst defaults.
DEFAULT_MORF_PERCENTILES = (80,)
DEFAULT_LERF_PERCENTILES = (20,)
DEFAULT_NOISE = 0.01
DEFAULT_TOL = 1e-5


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
def _check_valid(valid, batch: int):
    return _checks.check_valid(valid, batch)


def _check_percentiles(percentiles, name: str = "percentiles") -> tuple:
    values = _checks.concrete_list(percentiles, name)
    if not np.all((values > 0) & (values < 100)):
        raise ValueError(f"{name} must lie in (0, 100), got {values.tolist()}")
    return tuple(float(v) for v in values)


def _check_order(order: str) -> str:
    if order not in ROAD_ORDERS:
        raise ValueError(f"order must be one of {ROAD_ORDERS}, got {order!r}")
    return order


def _check_logits(logits, labels, name: str = "logits"):
    return _checks.check_logits_labels(logits, labels)


class ImputationNotConverged(RuntimeError):
    """ROAD's CG solve stopped at ``max_iterations`` above ``tol`` (concrete inputs only)."""


def _raise_if_unconverged(residual, tol: float, max_iterations: int | None, shape) -> None:
    """Raises :class:`ImputationNotConverged` when a concrete ``residual [B]`` exceeds ``tol``;
    traced residuals pass (the caller counts them)."""
    if not _checks.is_concrete(residual):
        return
    residual = np.asarray(residual)
    bad = np.flatnonzero(~(residual <= tol))
    if bad.size:
        cap = _max_iterations(shape, max_iterations)
        raise ImputationNotConverged(
            f"ROAD imputation: conjugate gradients stopped at max_iterations={cap} above "
            f"tol={tol:g} for {bad.size} of {residual.size} images (first: image {bad[0]}, "
            f"relative residual {residual[bad[0]]:.3g}); raise max_iterations or tol")


def _max_iterations(shape, max_iterations: int | None) -> int:
    """The CG step cap of images ``[B, H, W, C]``: default ``4 (H + W) + 100``."""
    if max_iterations is None:
        return 4 * (shape[1] + shape[2]) + 100
    if not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
    return int(max_iterations)


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------
def class_scores(logits, labels):
    """``softmax(logits)[b, labels[b]]``: float32 ``[B]`` (the score ``Y_c``)."""
    logits, labels = _checks.check_logits_labels(logits, labels)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(probs, labels[:, None], axis=1)[:, 0]


def explanation_images(images, scoremaps):
    """``E = L ∘ I``: ``images [B,H,W,C]`` times ``scoremaps [B,H,W]`` on every channel.

    The maps ``L`` must be finite and in [0, 1] (Grad-CAM++'s explanation map): concrete maps
    are checked (``_checks.check_unit_interval``; ValueError naming ``scoremaps``, the first
    offending index and its value), traced ones are used as given.
    """
    images = _checks.check_images(images)
    scoremaps = _checks.check_maps_like(scoremaps, images, "scoremaps")
    _checks.check_unit_interval(scoremaps, "scoremaps")
    scoremaps = scoremaps.astype(jnp.float32)
    return images * scoremaps[..., None]


# --------------------------------------------------------------------------------------------
# Average drop / increase in confidence
# --------------------------------------------------------------------------------------------
@flax.struct.dataclass
class ConfidenceCounts:
    """Streaming sums of the Grad-CAM++ confidence metrics.

    Attributes:
      drop: float32 ``[]``: Σ max(0, Y − O) / Y.
      absolute_drop: float32 ``[]``: Σ max(0, Y − O) (pytorch-grad-cam's DropInConfidence).
      change: float32 ``[]``: Σ (O − Y) (pytorch-grad-cam's CamMultImageConfidenceChange).
      increase: int32 ``[]``: #images with O > Y.
      count: int32 ``[]``: images counted.
    """
    drop: jax.Array
    absolute_drop: jax.Array
    change: jax.Array
    increase: jax.Array
    count: jax.Array

    @classmethod
    def empty(cls) -> ConfidenceCounts:
        zf, zi = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
        return cls(drop=zf, absolute_drop=zf, change=zf, increase=zi, count=zi)

    def merge(self, other: ConfidenceCounts) -> ConfidenceCounts:
        return jax.tree.map(jnp.add, self, other)

    def add(self, scores, explained_scores, valid=None) -> ConfidenceCounts:
        """Adds images given ``Y`` (``scores``) and ``O`` (``explained_scores``), float ``[B]``."""
        y = jnp.asarray(scores, jnp.float32)
        o = jnp.asarray(explained_scores, jnp.float32)
        if y.ndim != 1 or o.shape != y.shape:
            raise ValueError(f"scores and explained_scores must have one shape [B], got "
                             f"{y.shape}, {o.shape}")
        valid = _check_valid(valid, y.shape[0])
        fall = jnp.maximum(y - o, 0.0)
        rel = jnp.where(y > 0, fall / jnp.where(y > 0, y, 1.0), 0.0)
        zero = jnp.zeros((), jnp.float32)
        return self.merge(ConfidenceCounts(
            drop=jnp.sum(jnp.where(valid, rel, zero)),
            absolute_drop=jnp.sum(jnp.where(valid, fall, zero)),
            change=jnp.sum(jnp.where(valid, o - y, zero)),
            increase=jnp.sum(valid & (o > y), dtype=jnp.int32),
            count=jnp.sum(valid, dtype=jnp.int32)))

    def result(self) -> dict:
        """``average_drop``, ``increase_in_confidence``, ``mean_absolute_drop`` (fractions) and
        ``mean_confidence_change`` (mean O − Y, in [−1, 1])."""
        n = self.count.astype(jnp.float32)
        return {"average_drop": self.drop / n,
                "increase_in_confidence": self.increase.astype(jnp.float32) / n,
                "mean_absolute_drop": self.absolute_drop / n,
                "mean_confidence_change": self.change / n}


def confidence_counts(apply_fn: Callable[[jax.Array], jax.Array], images, scoremaps, labels,
                      valid=None, logits=None) -> ConfidenceCounts:
    """Average drop / increase counts of one batch.

    Args:
      apply_fn: ``images [B,H,W,C] -> logits [B,M]`` (the model, variables bound).
      images: float ``[B,H,W,C]``, as the model sees them.
      scoremaps: float ``[B,H,W]`` in [0, 1], the maps of class ``labels`` (concrete maps
        are checked: :func:`explanation_images`).
      labels: int ``[B]``: the explained class per image.
      valid: optional bool ``[B]``.
      logits: optional ``apply_fn(images)`` when already computed.

    Returns:
      :class:`ConfidenceCounts`.
    """
    images = _checks.check_images(images)
    logits = apply_fn(images) if logits is None else logits
    y = class_scores(logits, labels)
    o = class_scores(apply_fn(explanation_images(images, scoremaps)), labels)
    return ConfidenceCounts.empty().add(y, o, valid)


# --------------------------------------------------------------------------------------------
# Complexity
# --------------------------------------------------------------------------------------------
@flax.struct.dataclass
class ComplexityCounts:
    """Streaming sum of the maps' complexity (module docstring).

    Attributes:
      total: float32 ``[]``: Σ over images of mean(|L|) over the map's pixels.
      count: int32 ``[]``: images counted.
    """
    total: jax.Array
    count: jax.Array

    @classmethod
    def empty(cls) -> ComplexityCounts:
        return cls(total=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.int32))

    def merge(self, other: ComplexityCounts) -> ComplexityCounts:
        return jax.tree.map(jnp.add, self, other)

    def add(self, scoremaps, valid=None) -> ComplexityCounts:
        """Adds the maps ``scoremaps`` float ``[B, H, W]``."""
        maps = jnp.asarray(scoremaps, jnp.float32)
        if maps.ndim != 3:
            raise ValueError(f"scoremaps must have shape [B, H, W] (rank 3), got {maps.shape}")
        valid = _check_valid(valid, maps.shape[0])
        per_image = jnp.mean(jnp.abs(maps), axis=(1, 2))
        return self.merge(ComplexityCounts(
            total=jnp.sum(jnp.where(valid, per_image, 0.0)),
            count=jnp.sum(valid, dtype=jnp.int32)))

    def result(self) -> dict:
        """``complexity``: the mean over images of mean(|L|)."""
        return {"complexity": self.total / self.count.astype(jnp.float32)}


def complexity_counts(scoremaps, valid=None) -> ComplexityCounts:
    """Complexity counts of one batch of maps ``[B, H, W]`` (optional bool ``valid [B]``)."""
    return ComplexityCounts.empty().add(scoremaps, valid)


# --------------------------------------------------------------------------------------------
# ROAD: removal masks and noisy linear imputation
# --------------------------------------------------------------------------------------------
def road_keep_mask(scoremaps, percentile: float, order: str):
    """Pixels ROAD keeps (True) at ``percentile``: MoRF ``L < q_p(L)``, LeRF
    ``1 − L < q_p(1 − L)`` (``q_p``: per-image percentile, linear interpolation).

    Args:
      scoremaps: float ``[B,H,W]``.
      percentile: static, in (0, 100).
      order: "morf" | "lerf".

    Returns:
      bool ``[B,H,W]``.
    """
    (p,) = _check_percentiles([percentile], "percentile")
    order = _check_order(order)
    maps = jnp.asarray(scoremaps, jnp.float32)
    if maps.ndim != 3:
        raise ValueError(f"scoremaps must have shape [B, H, W] (rank 3), got {maps.shape}")
    relevance = maps if order == "morf" else 1.0 - maps
    flat = relevance.reshape(maps.shape[0], -1)
    return _below_percentile(flat, p).reshape(maps.shape)


def _below_percentile(values, p: float):
    """``values[b] < np.percentile(values[b], p)`` (linear) of float32 ``values [B, N]``, bit
    for bit. NumPy interpolates between neighbours ``a <= b`` of the sorted row in float32,
    ``q = a + (b − a) g`` below ``g = 0.5`` and ``b − (b − a)(1 − g)`` above. No value lies
    strictly between ``a`` and ``b``, so ``v < q`` is ``v <= a`` when ``q > a`` and ``v < a``
    otherwise, and ``q > a`` is decided from the rounded product by comparisons alone: under
    ``jit`` XLA fuses the product and the sum into one FMA (one rounding), which moves ``q``
    across a pixel where NumPy's two roundings tie (``jnp.percentile`` too).
    """
    n = values.shape[1]
    virtual = (n - 1) * (p / 100)
    i = int(np.floor(virtual))
    gamma = virtual - i
    ordered = jnp.sort(values, axis=1)
    a, b = ordered[:, i, None], ordered[:, min(i + 1, n - 1), None]
    a_even = (lax.bitcast_convert_type(a, jnp.int32) & 1) == 0
    if gamma < 0.5:
        # q = RN(a + t) > a  iff  t is over half the spacing above a, or at it with a odd
        t = (b - a) * np.float32(gamma)
        half = (jnp.nextafter(a, jnp.inf) - a) * 0.5
        above = (t > half) | ((t == half) & ~a_even)
    else:
        # q = RN(b − t), t <= (b − a) / 2: q falls to a only from the next float above a,
        # at the tie t = (b − a) / 2, with a even
        t = (b - a) * np.float32(1 - gamma)
        tie = (jnp.nextafter(b, -jnp.inf) == a) & (t == (b - a) * 0.5) & a_even
        above = (b > a) & ~tie
    return jnp.where(above, values <= a, values < a)


def _neighbour_sum(x):
    """``Σ_o w_o x[p + o]`` over the 8 neighbours inside the image; x ``[..., H, W]``."""
    h, w = x.shape[-2:]
    pad = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    out = jnp.zeros_like(x)
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
        out = out + weight * pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return out


def linear_imputation(images, removed, *, tol: float = DEFAULT_TOL,
                      max_iterations: int | None = None):
    """Solves ROAD's linear imputation system (module docstring) for every image and channel.

    Args:
      images: float ``[B,H,W,C]``.
      removed: bool ``[B,H,W]``: pixels to impute (the same on every channel).
      tol: relative residual ``||r|| / ||b||`` at which a system's CG stops.
      max_iterations: CG step cap (default ``4 (H + W) + 100``).

    Returns:
      ``(imputed [B,H,W,C] float32, iterations int32 [], residual float32 [B])``: kept pixels
      unchanged, removed ones the solution; ``iterations`` is the CG steps taken; ``residual``
      each image's largest relative residual ``||r|| / ||b||`` over its channels (0 where
      nothing is imputed): above ``tol``, that image's solve stopped at the cap unconverged.
      This function never raises on non-convergence (see :func:`noisy_linear_imputation`).
    """
    images = _checks.check_images(images)
    removed = _checks.check_maps_like(removed, images, "removed").astype(bool)
    h, w = images.shape[1:3]
    max_iterations = _max_iterations(images.shape, max_iterations)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    v = jnp.moveaxis(images, -1, 1)                               # [B, C, H, W]
    r_mask = removed[:, None].astype(jnp.float32)                 # [B, 1, H, W]
    k_mask = 1.0 - r_mask
    s = _neighbour_sum(jnp.ones((h, w), jnp.float32))              # in-image weight sum
    diag = r_mask * s + k_mask                                     # kept pixels: identity rows

    def matvec(x):
        return r_mask * (s * x - _neighbour_sum(r_mask * x)) + k_mask * x

    def dot(a, b):
        return jnp.sum(a * b, axis=(-2, -1))                       # [B, C]

    b = r_mask * _neighbour_sum(k_mask * v)
    b_norm = jnp.sqrt(dot(b, b))
    x = jnp.zeros_like(b)
    r = b
    z = r / diag
    p = z
    rz = dot(r, z)

    def active(r):
        return jnp.sqrt(dot(r, r)) > tol * b_norm

    def cond(state):
        k, _, r, _, _ = state
        return (k < max_iterations) & jnp.any(active(r))

    def body(state):
        k, x, r, p, rz = state
        ap = matvec(p)
        pap = dot(p, ap)
        go = active(r) & (pap > 0)
        alpha = jnp.where(go, rz / jnp.where(go, pap, 1.0), 0.0)[..., None, None]
        x = x + alpha * p
        r = r - alpha * ap
        z = r / diag
        rz_new = dot(r, z)
        beta = jnp.where(go & (rz > 0), rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta[..., None, None] * p
        return k + 1, x, r, p, jnp.where(go, rz_new, rz)

    k, x, r, _, _ = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), x, r, p, rz))
    out = jnp.where(r_mask > 0, x, v)
    r_norm = jnp.sqrt(dot(r, r))                                   # [B, C]
    relative = jnp.where(b_norm > 0, r_norm / jnp.where(b_norm > 0, b_norm, 1.0),
                         jnp.where(r_norm > 0, jnp.inf, 0.0))
    return jnp.moveaxis(out, 1, -1), k, jnp.max(relative, axis=1)


def _image_keys(key, images, labels):
    """One PRNG key per image from an order-free hash of its float32 bits and its label."""
    bits = lax.bitcast_convert_type(images.astype(jnp.float32), jnp.uint32)
    mixed = bits * jnp.uint32(2654435761) ^ (bits >> 16)
    h = jnp.sum(mixed.reshape(images.shape[0], -1), axis=1, dtype=jnp.uint32)
    h = h ^ (labels.astype(jnp.uint32) * jnp.uint32(0x9E3779B9))
    return jax.vmap(lambda d: jax.random.fold_in(key, d))(h)


def noisy_linear_imputation(images, removed, key, labels=None, *, noise: float = DEFAULT_NOISE,
                            tol: float = DEFAULT_TOL, max_iterations: int | None = None,
                            with_residual: bool = False):
    """ROAD's noisy linear imputation: :func:`linear_imputation` plus ``noise · N(0, 1)`` on
    every imputed value (each channel independently).

    Args:
      images: float ``[B,H,W,C]``; removed: bool ``[B,H,W]``.
      key: PRNG key; image ``b`` draws from ``fold_in(key, hash(images[b], labels[b]))``.
      labels: optional int ``[B]`` mixed into the hash (default zeros).
      noise: standard deviation of the added noise (absolute), >= 0.
      tol, max_iterations: see :func:`linear_imputation`.
      with_residual: also return the solve's relative residual per image (float32 ``[B]``,
        :func:`linear_imputation`) instead of raising on non-convergence.

    Returns:
      float32 ``[B,H,W,C]`` (and the residual ``[B]`` with ``with_residual``).

    Raises:
      ImputationNotConverged: (concrete inputs, without ``with_residual``) a solve stopped at
        ``max_iterations`` above ``tol``. Traced, nothing is raised: ask for the residual.
    """
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    images = _checks.check_images(images)
    labels = (jnp.zeros(images.shape[0], jnp.int32) if labels is None
              else jnp.asarray(labels))
    imputed, _, residual = linear_imputation(images, removed, tol=tol,
                                             max_iterations=max_iterations)
    if not with_residual:
        _raise_if_unconverged(residual, tol, max_iterations, images.shape)
    if noise != 0:
        keys = _image_keys(key, images, labels)
        draws = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:], jnp.float32))(keys)
        imputed = imputed + noise * jnp.asarray(removed, jnp.float32)[..., None] * draws
    return (imputed, residual) if with_residual else imputed


def road_images(images, scoremaps, percentile: float, order: str, key, labels=None, *,
                noise: float = DEFAULT_NOISE, tol: float = DEFAULT_TOL,
                max_iterations: int | None = None, with_residual: bool = False):
    """Images with ROAD's removed pixels (:func:`road_keep_mask`) imputed
    (:func:`noisy_linear_imputation`, which raises :class:`ImputationNotConverged` on concrete
    inputs); float32 ``[B,H,W,C]``, and the solve's residual ``[B]`` with ``with_residual``
    (for :meth:`RoadCounts.add`; nothing is raised then)."""
    images = _checks.check_images(images)
    scoremaps = _checks.check_maps_like(scoremaps, images, "scoremaps")
    removed = ~road_keep_mask(scoremaps, percentile, order)
    return noisy_linear_imputation(images, removed, key, labels, noise=noise, tol=tol,
                                   max_iterations=max_iterations, with_residual=with_residual)


@flax.struct.dataclass
class RoadCounts:
    """Streaming ROAD counts at ``P`` percentiles of one removal order.

    Attributes:
      score_change: float32 ``[P]``: Σ (O_c − Y_c), the class score on the imputed image minus
        on the original (pytorch-grad-cam's ROAD value).
      correct: int32 ``[P]``: images whose imputed version is still classified as ``c``
        (top-1), the ROAD paper's accuracy.
      count: int32 ``[]``: images counted.
      unconverged: int32 ``[P]``: images whose imputation's CG solve stopped at its cap above
        ``tol`` (their imputed images are inexact); counted when the residuals are given.
      percentiles: static tuple of ``P`` percentiles in (0, 100).
      order: static "morf" | "lerf".
    """
    score_change: jax.Array
    correct: jax.Array
    count: jax.Array
    unconverged: jax.Array
    percentiles: tuple = flax.struct.field(pytree_node=False, default=DEFAULT_MORF_PERCENTILES)
    order: str = flax.struct.field(pytree_node=False, default="morf")

    @classmethod
    def empty(cls, percentiles: Sequence[float] = DEFAULT_MORF_PERCENTILES,
              order: str = "morf") -> RoadCounts:
        percentiles = _check_percentiles(percentiles)
        order = _check_order(order)
        n = len(percentiles)
        return cls(score_change=jnp.zeros((n,), jnp.float32),
                   correct=jnp.zeros((n,), jnp.int32), count=jnp.zeros((), jnp.int32),
                   unconverged=jnp.zeros((n,), jnp.int32), percentiles=percentiles, order=order)

    def merge(self, other: RoadCounts) -> RoadCounts:
        return jax.tree.map(jnp.add, self, other)

    def add(self, scores, imputed_logits, labels, valid=None, residual=None,
            tol: float = DEFAULT_TOL) -> RoadCounts:
        """Adds images given ``Y_c`` (``scores [B]``) and the logits of their imputed versions
        (``imputed_logits [P, B, M]``, one row per percentile); ``residual`` ``[P, B]``
        (``road_images(..., with_residual=True)``), when given, counts the images above
        ``tol`` in ``unconverged``."""
        y = jnp.asarray(scores, jnp.float32)
        imputed_logits = jnp.asarray(imputed_logits)
        if imputed_logits.ndim != 3 or imputed_logits.shape[:2] != (len(self.percentiles),
                                                                     y.shape[0]):
            raise ValueError(f"imputed_logits must have shape [P, B, M] = "
                             f"({len(self.percentiles)}, {y.shape[0]}, M), got "
                             f"{imputed_logits.shape}")
        valid = _check_valid(valid, y.shape[0])
        labels = jnp.asarray(labels, jnp.int32)
        o = jax.vmap(class_scores, in_axes=(0, None))(imputed_logits, labels)     # [P, B]
        right = jnp.argmax(imputed_logits, axis=-1) == labels[None]
        unconverged = jnp.zeros(o.shape[0], jnp.int32)
        if residual is not None:
            residual = jnp.asarray(residual, jnp.float32)
            if residual.shape != o.shape:
                raise ValueError(f"residual must have shape [P, B] = {o.shape}, got "
                                 f"{residual.shape}")
            unconverged = jnp.sum(~(residual <= tol) & valid[None], axis=1, dtype=jnp.int32)
        return self.merge(self.replace(
            score_change=jnp.sum(jnp.where(valid[None], o - y[None], 0.0), axis=1),
            correct=jnp.sum(right & valid[None], axis=1, dtype=jnp.int32),
            count=jnp.sum(valid, dtype=jnp.int32), unconverged=unconverged))

    def result(self) -> dict:
        """``score_change`` [P] (mean O_c − Y_c) and ``accuracy`` [P] (fractions);
        ``unconverged`` [P]: the count of images whose imputation did not converge (0 when
        every solve reached ``tol``; nonzero flags inexact ROAD values)."""
        n = self.count.astype(jnp.float32)
        return {"score_change": self.score_change / n,
                "accuracy": self.correct.astype(jnp.float32) / n,
                "unconverged": self.unconverged}


def road_counts(apply_fn: Callable[[jax.Array], jax.Array], images, scoremaps, labels, key,
                percentiles: Sequence[float] = DEFAULT_MORF_PERCENTILES, order: str = "morf",
                valid=None, logits=None, *, noise: float = DEFAULT_NOISE,
                tol: float = DEFAULT_TOL, max_iterations: int | None = None) -> RoadCounts:
    """ROAD counts of one batch at every percentile of one order.

    Args:
      apply_fn: ``images [B,H,W,C] -> logits [B,M]``.
      images: float ``[B,H,W,C]``; scoremaps: float ``[B,H,W]`` (maps of class ``labels``).
      labels: int ``[B]``; key: PRNG key of the imputation noise.
      percentiles: static, in (0, 100); order: "morf" | "lerf".
      valid: optional bool ``[B]``; logits: optional ``apply_fn(images)``.
      noise, tol, max_iterations: see :func:`noisy_linear_imputation`.

    Returns:
      :class:`RoadCounts`, with the images whose solve did not converge in ``unconverged``.

    Raises:
      ImputationNotConverged: (concrete inputs) a valid image's solve stopped at
        ``max_iterations`` above ``tol``; traced, it is counted instead.
    """
    counts = RoadCounts.empty(percentiles, order)
    images = _checks.check_images(images)
    labels = jnp.asarray(labels)
    logits = apply_fn(images) if logits is None else logits
    y = class_scores(logits, labels)
    solved = [road_images(images, scoremaps, p, order, key, labels, noise=noise, tol=tol,
                          max_iterations=max_iterations, with_residual=True)
              for p in counts.percentiles]
    imputed = jnp.stack([im for im, _ in solved])                           # [P, B, H, W, C]
    residual = jnp.stack([r for _, r in solved])                            # [P, B]
    valid_b = _check_valid(valid, images.shape[0])
    _raise_if_unconverged(jnp.max(jnp.where(valid_b[None], residual, 0.0), axis=0), tol,
                          max_iterations, images.shape)                     # worst over P
    flat = imputed.reshape((-1,) + imputed.shape[2:])
    imputed_logits = apply_fn(flat).reshape(imputed.shape[:2] + (-1,))
    return counts.add(y, imputed_logits, labels, valid, residual, tol)


def road_combined(morf: dict, lerf: dict) -> float:
    """pytorch-grad-cam's ``ROADCombined``: (mean LeRF − mean MoRF score change) / 2, from two
    :meth:`RoadCounts.result` dicts (their percentile means)."""
    return float((np.mean(np.asarray(lerf["score_change"]))
                  - np.mean(np.asarray(morf["score_change"]))) / 2)
