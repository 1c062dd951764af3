"""PxAP, the pixel average precision of Choe et al. (CVPR 2020), as mergeable pixel histograms.

Definition (the WSOL protocol on mask datasets such as OpenImages30k). With score thresholds
``t_0 = 0 < t_1 < ... < t_{T-1} < 1`` (``np.arange(0, 1, interval)``) the pixel scores are
binned over the edges ``e = (t_0, ..., t_{T-1}, 1, 2, 3)``: bin ``k`` holds ``e_k <= s < e_{k+1}``
(the last bin is closed, as in ``np.histogram``), so a score of exactly 1 falls in bin ``T``.
Two histograms are kept, ``positive`` over foreground pixels and ``negative`` over background
pixels outside the ignore region. Counting from the top bin down,
``tp_j = Σ_{k >= K-1-j} positive_k`` and ``fp_j`` likewise (``K = T + 2`` bins), and

    precision_j = tp_j / (tp_j + fp_j),   recall_j = tp_j / Σ positive,
    PxAP = Σ_{j >= 1, tp_j + fp_j > 0} precision_j · (recall_j - recall_{j-1}).

Streaming: :class:`PixelCounts` is a ``flax.struct.dataclass`` of int32 histograms (a pytree):
``a.merge(b)`` adds batches, ``lax.psum(counts, axis_name)`` sums devices; ``.result()`` is
computed on the host in float64 from the summed counts. One batch's counts must stay below
2**31 per bin (about 40,000 maps of 224x224): merge on the host in int64 for more
(:func:`average_precision` accepts any integer histograms).

Exactness: the bin of a float32 score is found against each edge rounded *up* to float32, so
``s >= e_k`` holds exactly as it does in float64; float64 maps can be binned on the host with
:func:`host_score_bins` and counted with :func:`pixel_counts_from_bins`.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import _checks

__all__ = [
    "DEFAULT_THRESHOLDS",
    "PixelCounts",
    "average_precision",
    "bin_edges",
    "host_score_bins",
    "pixel_counts",
    "pixel_counts_from_bins",
    "pxap",
    "score_bins",
]

DEFAULT_THRESHOLDS = np.arange(0, 1, 0.01)


def _check_thresholds(thresholds) -> tuple:
    if isinstance(thresholds, jax.core.Tracer):
        raise ValueError("thresholds must be concrete (Python/NumPy) values, not traced")
    values = np.atleast_1d(np.asarray(thresholds, np.float64))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D list [T], got shape {values.shape}")
    if not (np.all((values >= 0) & (values < 1)) and np.all(np.diff(values) > 0)):
        raise ValueError("thresholds must be strictly increasing values in [0, 1), e.g. "
                         f"np.arange(0, 1, 0.01); got values in [{np.nanmin(values)}, "
                         f"{np.nanmax(values)}]")
    return tuple(float(v) for v in values)


def bin_edges(thresholds) -> np.ndarray:
    """float64 ``[T + 3]``: the thresholds followed by 1, 2, 3 (``K = T + 2`` bins)."""
    return np.concatenate([np.asarray(_check_thresholds(thresholds)), [1.0, 2.0, 3.0]])


@functools.lru_cache(maxsize=16)
def _edges_float32(thresholds: tuple) -> np.ndarray:
    """Each edge rounded up to the nearest float32, so ``float32 s >= edge32`` iff ``s >= e``."""
    edges = bin_edges(thresholds)
    down = edges.astype(np.float32)
    up = np.where(down.astype(np.float64) < edges, np.nextafter(down, np.float32(np.inf)), down)
    return up.astype(np.float32)


def host_score_bins(scoremap, thresholds) -> np.ndarray:
    """Bin index of every score, in NumPy float64 (``np.histogram``'s bins): int16 ``[...]``.

    Args:
      scoremap: float array of any shape with values in [0, 1] (not checked here).
      thresholds: host ``[T]``.
    """
    edges = bin_edges(thresholds)
    idx = np.searchsorted(edges, np.asarray(scoremap, np.float64), side="right") - 1
    return np.minimum(idx, edges.size - 2).astype(np.int16)


def score_bins(scoremaps, thresholds):
    """Bin index of every score of float32 maps: int32 ``[...]`` in ``[0, T + 2)``.

    Jit-compatible (``thresholds`` are host values). Scores must lie in [0, 1].
    """
    edges = jnp.asarray(_edges_float32(_check_thresholds(thresholds)))
    idx = jnp.searchsorted(edges, jnp.asarray(scoremaps, jnp.float32), side="right") - 1
    return jnp.clip(idx, 0, edges.shape[0] - 2).astype(jnp.int32)


@flax.struct.dataclass
class PixelCounts:
    """Streaming PxAP counts.

    Attributes:
      positive: int32 ``[T + 2]``: foreground pixels per score bin.
      negative: int32 ``[T + 2]``: background pixels (outside the ignore region) per bin.
      thresholds: static tuple of the ``T`` score thresholds.
    """
    positive: jax.Array
    negative: jax.Array
    thresholds: tuple = flax.struct.field(pytree_node=False, default=())

    @classmethod
    def empty(cls, thresholds=DEFAULT_THRESHOLDS) -> PixelCounts:
        thresholds = _check_thresholds(thresholds)
        zeros = jnp.zeros((len(thresholds) + 2,), jnp.int32)
        return cls(zeros, zeros, thresholds)

    def merge(self, other: PixelCounts) -> PixelCounts:
        return jax.tree.map(jnp.add, self, other)

    def update(self, scoremaps, foreground, ignore=None, valid=None) -> PixelCounts:
        return self.merge(pixel_counts(scoremaps, foreground, ignore, self.thresholds, valid))

    def result(self) -> dict:
        """Host float64: ``pxap`` (a fraction in [0, 1]), ``precision`` and ``recall`` ``[T+2]``
        (from the top bin down). Raises ValueError when no foreground pixel was counted."""
        return average_precision(np.asarray(self.positive), np.asarray(self.negative),
                                 with_curve=True)


def _check_pixels(foreground, ignore, valid, shape):
    """Shapes, and (concrete values) 0/1 masks (``_checks.check_mask_values``)."""
    foreground = jnp.asarray(foreground)
    if foreground.shape != shape:
        raise ValueError(f"foreground must have the score maps' shape {shape}, got "
                         f"{foreground.shape}")
    ignore = jnp.zeros(shape, bool) if ignore is None else jnp.asarray(ignore)
    if ignore.shape != shape:
        raise ValueError(f"ignore must have the score maps' shape {shape}, got {ignore.shape}")
    valid = _checks.check_valid(valid, shape[0])
    for name, mask in (("foreground", foreground), ("ignore", ignore)):
        _checks.check_mask_values(mask, name)
    return foreground.astype(bool), ignore.astype(bool), valid


@functools.partial(jax.jit, static_argnames=("num_bins",))
def _histograms(bins, foreground, ignore, valid, num_bins):
    counted = ~ignore & valid.reshape((-1,) + (1,) * (bins.ndim - 1))
    # One bincount over 2K + 1 slots: background bins, foreground bins, a dump slot.
    slot = jnp.where(counted, bins + num_bins * foreground.astype(jnp.int32), 2 * num_bins)
    hist = jnp.bincount(slot.reshape(-1), length=2 * num_bins + 1).astype(jnp.int32)
    return hist[num_bins:2 * num_bins], hist[:num_bins]


def pixel_counts_from_bins(bins, foreground, ignore=None, thresholds=DEFAULT_THRESHOLDS,
                           valid=None) -> PixelCounts:
    """PxAP counts from precomputed bin indices (:func:`score_bins` / :func:`host_score_bins`).

    Args:
      bins: int ``[B, H, W]`` in ``[0, T + 2)``.
      foreground: bool (or 0/1) ``[B, H, W]``: the union of the instance masks.
      ignore: optional bool ``[B, H, W]``; ignored pixels count in neither histogram (the
        protocol's ignore region is the ignore box minus the foreground, so an ignore pixel
        that is also foreground is not counted either: pass ``ignore & ~foreground`` for it).
      thresholds: host ``[T]``.
      valid: optional bool ``[B]``; False rows (padding) count zero times.

    Returns:
      :class:`PixelCounts`.

    Raises:
      ValueError: shapes that disagree with ``bins``; concrete values only (traced values are
        not checked: :func:`score_bins` makes bins in range, masks are cast to bool): a bin
        outside ``[0, T + 2)``, or a ``foreground`` / ``ignore`` / ``valid`` value other than
        0 / 1, naming the argument, the first offending index and its value.
    """
    thresholds = _check_thresholds(thresholds)
    bins = jnp.asarray(bins)
    if bins.ndim < 2 or not jnp.issubdtype(bins.dtype, jnp.integer):
        raise ValueError(f"bins must be an integer array [B, H, W], got {bins.dtype} "
                         f"{bins.shape}")
    foreground, ignore, valid = _check_pixels(foreground, ignore, valid, bins.shape)
    if _checks.is_concrete(bins):
        values = np.asarray(bins)
        bad = (values < 0) | (values >= len(thresholds) + 2)
        if bad.any():
            i = _checks.first_index(bad)
            raise ValueError(f"bins must lie in [0, T + 2) = [0, {len(thresholds) + 2}), got "
                             f"bins[{', '.join(map(str, i))}] = {values[i]}")
    positive, negative = _histograms(bins.astype(jnp.int32), foreground, ignore, valid,
                                     len(thresholds) + 2)
    return PixelCounts(positive, negative, thresholds)


def pixel_counts(scoremaps, foreground, ignore=None, thresholds=DEFAULT_THRESHOLDS,
                 valid=None) -> PixelCounts:
    """PxAP counts of one batch of float32 score maps.

    Args:
      scoremaps: float ``[B, H, W]`` in [0, 1] (cast to float32); concrete maps must be
        finite and in [0, 1] (``_checks.check_scoremaps``), traced ones are binned as given
        (a score below 0 falls in bin 0, one above 1 in the top bin).
      foreground, ignore, thresholds, valid: as in :func:`pixel_counts_from_bins`.

    Returns:
      :class:`PixelCounts`.

    Raises:
      ValueError: as :func:`pixel_counts_from_bins`, or concrete maps outside [0, 1] / not
        finite (naming ``scoremaps``, the first offending index and its value).
    """
    scoremaps = _checks.check_scoremaps(scoremaps)
    return pixel_counts_from_bins(score_bins(scoremaps, thresholds), foreground, ignore,
                                  thresholds, valid)


def average_precision(positive, negative, with_curve: bool = False):
    """PxAP from the two histograms, in float64 (see the module docstring).

    Args:
      positive, negative: integer ``[K]`` histograms, bin 0 the lowest scores.
      with_curve: also return the precision and recall arrays.

    Returns:
      The AP as a fraction in [0, 1]; with ``with_curve`` a dict ``pxap``, ``precision``,
      ``recall`` (``[K]``, from the top bin down; precision is NaN where nothing is predicted).

    Raises:
      ValueError: no foreground pixel, or no pixel at all, was counted.
    """
    positive = np.asarray(positive, np.float64)
    negative = np.asarray(negative, np.float64)
    if positive.ndim != 1 or positive.shape != negative.shape:
        raise ValueError(f"positive and negative must be 1-D histograms of one length, got "
                         f"{positive.shape} and {negative.shape}")
    total_positive = positive.sum()
    tp = np.cumsum(positive[::-1])
    fp = np.cumsum(negative[::-1])
    predicted = tp + fp
    if total_positive <= 0:
        raise ValueError("PxAP needs at least one foreground pixel; none was counted")
    if not np.any(predicted > 0):
        raise ValueError("PxAP needs at least one counted pixel; none was counted")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / predicted
    recall = tp / total_positive
    steps = (precision[1:] * np.diff(recall))[predicted[1:] != 0]
    value = float(steps.sum())
    if with_curve:
        return {"pxap": value, "precision": precision, "recall": recall}
    return value


def pxap(scoremaps, foreground, ignore=None, thresholds=DEFAULT_THRESHOLDS, valid=None) -> float:
    """PxAP of one set of maps (a fraction in [0, 1]); see :func:`pixel_counts`."""
    return pixel_counts(scoremaps, foreground, ignore, thresholds, valid).result()["pxap"]
