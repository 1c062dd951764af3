"""WSOL and classification metrics, with mergeable streaming counts.

Definitions (the WSOL protocol of Choe et al., CVPR 2020, and the paper's fixed-threshold
metrics). Boxes are int ``(x0, y0, x1, y1)`` with inclusive pixel coordinates.

* IoU, inclusive convention: ``area = (x1-x0+1)(y1-y0+1)``, intersection width
  ``max(min(x1, x1') - max(x0, x0') + 1, 0)`` (same for the height), ``IoU = I / (A + A' - I)``.
  (The authors' released code did not clamp the intersection at 0, so two disjoint boxes
  could get a positive "intersection"; we clamp.)
* An image is *localised* at score threshold ``t`` and IoU threshold ``δ`` when the box(es)
  ``boxes.max_contour_iou`` extracts from its score map at ``t`` reach ``IoU >= δ`` with at
  least one valid ground-truth box (several GT boxes per image: padded ``[B, G, 4]`` plus
  ``gt_valid [B, G]``; an image with no valid GT box is never localised).
* Top-k classification: the label is among the k largest logits (``lax.top_k``; on ties the
  lower class index ranks first).
* GT-known Loc: localised at the fixed ``cam_threshold`` (0.2) and ``iou_threshold`` (0.5),
  using the map of the ground-truth class and the largest connected component.
* Top-1 Loc: top-1 classification correct **and** GT-known localised. (The protocol uses the
  predicted class's map; when top-1 is correct that is the ground-truth class's map, so the two
  definitions agree exactly.)
* BoxAcc(t, δ): fraction of images localised; MaxBoxAcc(δ) = max_t BoxAcc(t, δ) over the
  threshold list (default ``np.arange(0, 1, 0.01)``), largest component only;
  MaxBoxAccV2 = mean over δ ∈ {0.3, 0.5, 0.7} of MaxBoxAcc(δ) with every contour's box
  (``multi_contour=True``).
* Multi-label metrics (double-digit MNIST) live in ``infocam_jax.metrics.multilabel``.

Streaming. Every ``*_counts`` function returns a ``flax.struct.dataclass`` of int32 counts
(a pytree): add batches with ``a.merge(b)`` (``jax.tree.map(jnp.add, a, b)``), sum devices with
``lax.psum(counts, axis_name)``, and call ``.result()`` for fractions in [0, 1] (NaN when
nothing was counted). A ``valid [B]`` mask makes padded examples count zero times. Static
settings (thresholds, ...) live in the pytree structure, so counts with different settings
refuse to merge.

Checks. Shapes/ranks are checked at trace time (``ValueError`` naming the argument).
Value checks run on concrete values (``infocam_jax._checks``; the error names the argument,
the first offending index and its value): labels in ``[0, M)`` on every row (padded rows
included: pad with 0), valid GT boxes with ``x0 <= x1``, ``y0 <= y1`` inside the ``H x W``
score map (rows with ``gt_valid`` False are padding and not checked), masks of 0/1, score maps
finite and in [0, 1]. Under ``jit`` traced values cannot be checked: out-of-range labels then
match no logit (never correct), and maps outside [0, 1] are clipped by the box extraction's
quantisation (``boxes.extract``). Score and IoU thresholds are compile-time constants: they
must be concrete (Python / NumPy) values in [0, 1].

Box extraction lives in ``infocam_jax.boxes`` (imported when first needed).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax import _checks
from infocam_jax import boxes as boxes_lib

__all__ = [
    "DEFAULT_THRESHOLDS",
    "V2_IOU_THRESHOLDS",
    "BoxAccuracyCounts",
    "LocalizationCounts",
    "box_accuracy_counts",
    "gt_known_loc_correct",
    "iou",
    "localization_counts",
    "max_box_accuracy",
    "max_box_accuracy_v2",
    "top1_loc_correct",
    "topk_correct",
]

# The reference code's training-time default grid (cam_curve_interval 0.001); boxes cost the
# same at any number of thresholds (one component-tree pass per map, then a gather).
DEFAULT_THRESHOLDS = np.arange(0, 1, 0.001)
V2_IOU_THRESHOLDS = (0.3, 0.5, 0.7)


# --------------------------------------------------------------------------------------------
# Basic metrics
# --------------------------------------------------------------------------------------------
def iou(boxes_a, boxes_b):
    """Inclusive-pixel IoU of boxes ``(x0, y0, x1, y1)``, broadcasting over leading axes.

    ``I = max(min(x1a,x1b) - max(x0a,x0b) + 1, 0) · max(min(y1a,y1b) - max(y0a,y0b) + 1, 0)``,
    ``IoU = I / ((x1a-x0a+1)(y1a-y0a+1) + (x1b-x0b+1)(y1b-y0b+1) - I)``.

    Args:
      boxes_a: int or float ``[..., 4]`` with x0 <= x1, y0 <= y1 (checked when concrete).
      boxes_b: same, broadcastable against ``boxes_a``.

    Returns:
      float32 ``[...]`` (the broadcast leading shape).
    """
    a = jnp.asarray(boxes_a)
    b = jnp.asarray(boxes_b)
    for name, x in (("boxes_a", a), ("boxes_b", b)):
        if x.ndim < 1 or x.shape[-1] != 4:
            raise ValueError(f"{name} must have shape [..., 4] (x0, y0, x1, y1), got {x.shape}")
        _checks.check_box_values(x, True, name)
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    iw = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]) + 1, 0)
    ih = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]) + 1, 0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


def topk_correct(logits, labels, k: int = 1):
    """Whether each label is among its image's ``k`` largest logits.

    Args:
      logits: float ``[B, M]``.
      labels: int ``[B]`` in ``[0, M)``.
      k: static int >= 1 (clipped to M).

    Returns:
      bool ``[B]``.
    """
    logits, labels = _checks.check_logits_labels(logits, labels)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    _, top = lax.top_k(logits, min(int(k), logits.shape[1]))
    return jnp.any(top == labels[:, None], axis=1)


def _max_iou(scoremaps, gt_boxes, gt_valid, thresholds: tuple, multi_contour: bool,
             backend: str = "auto"):
    """``boxes.max_contour_iou`` -> float32 ``[B, T]``."""
    out = boxes_lib.max_contour_iou(
        scoremaps, np.asarray(thresholds, np.float64), gt_boxes, gt_valid,
        multi_contour=bool(multi_contour), backend=backend)
    return jnp.asarray(out, jnp.float32)


def gt_known_loc_correct(scoremaps, gt_boxes, gt_valid, cam_threshold: float = 0.2,
                         iou_threshold: float = 0.5, backend: str = "auto"):
    """GT-known localisation per image: largest box at ``cam_threshold`` has IoU >= threshold.

    Args:
      scoremaps: float ``[B, H, W]`` in [0, 1], the ground-truth class's normalised maps.
      gt_boxes: int ``[B, G, 4]``; gt_valid: bool ``[B, G]``.
      cam_threshold: fraction of the map's maximum (static, in [0, 1]).
      iou_threshold: static, in [0, 1].
      backend: box pass, ``"auto"`` | ``"native"`` | ``"xla"`` (``boxes.resolve_backend``).

    Returns:
      bool ``[B]``.
    """
    scoremaps = _checks.check_scoremaps(scoremaps)
    gt_boxes, gt_valid = _checks.check_gt(gt_boxes, gt_valid, scoremaps.shape[0],
                                          scoremaps.shape[1:])
    (t,) = _checks.check_thresholds([cam_threshold], "cam_threshold")
    (delta,) = _checks.check_thresholds([iou_threshold], "iou_threshold")
    return _max_iou(scoremaps, gt_boxes, gt_valid, (t,), False, backend)[:, 0] >= delta


def top1_loc_correct(logits, labels, scoremaps, gt_boxes, gt_valid, cam_threshold: float = 0.2,
                     iou_threshold: float = 0.5, backend: str = "auto"):
    """Top-1 localisation per image: top-1 classification correct and GT-known localised.

    Args:
      logits: float ``[B, M]``; labels: int ``[B]``.
      scoremaps, gt_boxes, gt_valid, cam_threshold, iou_threshold, backend: as in
        :func:`gt_known_loc_correct`.

    Returns:
      bool ``[B]``.
    """
    return topk_correct(logits, labels, 1) & gt_known_loc_correct(
        scoremaps, gt_boxes, gt_valid, cam_threshold, iou_threshold, backend)


# --------------------------------------------------------------------------------------------
# MaxBoxAcc
# --------------------------------------------------------------------------------------------
@flax.struct.dataclass
class BoxAccuracyCounts:
    """Streaming BoxAcc counts.

    Attributes:
      correct: int32 ``[I, T]``: images localised per (IoU threshold, score threshold).
      count: int32 ``[]``: images counted.
      thresholds: static tuple of ``T`` score thresholds.
      iou_thresholds: static tuple of ``I`` IoU thresholds.
      multi_contour: static bool, every contour's box (True) or the largest only.
    """
    correct: jax.Array
    count: jax.Array
    thresholds: tuple = flax.struct.field(pytree_node=False, default=())
    iou_thresholds: tuple = flax.struct.field(pytree_node=False, default=(0.5,))
    multi_contour: bool = flax.struct.field(pytree_node=False, default=False)

    @classmethod
    def empty(cls, thresholds=DEFAULT_THRESHOLDS, iou_thresholds=(0.5,),
              multi_contour: bool = False) -> BoxAccuracyCounts:
        thresholds = _checks.check_thresholds(thresholds)
        iou_thresholds = _checks.check_thresholds(iou_thresholds, "iou_thresholds")
        return cls(jnp.zeros((len(iou_thresholds), len(thresholds)), jnp.int32),
                   jnp.zeros((), jnp.int32), thresholds, iou_thresholds, bool(multi_contour))

    def merge(self, other: BoxAccuracyCounts) -> BoxAccuracyCounts:
        return jax.tree.map(jnp.add, self, other)

    def update(self, scoremaps, gt_boxes, gt_valid, valid=None,
               backend: str = "auto") -> BoxAccuracyCounts:
        return self.merge(box_accuracy_counts(
            scoremaps, gt_boxes, gt_valid, self.thresholds, self.iou_thresholds,
            self.multi_contour, valid, backend))

    def add_iou(self, best_iou, valid, where=None) -> BoxAccuracyCounts:
        """Adds images given their best IoU per score threshold.

        Args:
          best_iou: float ``[B, T]`` at ``self.thresholds`` (``boxes.max_contour_iou``).
          valid: bool ``[B]``; False rows count zero times.
          where: optional bool ``[B]``: only these images can be correct (e.g. top-1 right,
            which turns BoxAcc into Top-1 Loc per threshold).
        """
        ok = valid if where is None else valid & where
        hit = best_iou[None] >= jnp.asarray(self.iou_thresholds, jnp.float32)[:, None, None]
        return self.merge(self.replace(
            correct=jnp.sum(hit & ok[None, :, None], axis=1, dtype=jnp.int32),
            count=jnp.sum(valid, dtype=jnp.int32)))

    def result(self) -> dict:
        """``box_acc`` [I, T], ``max_box_acc`` [I], ``best_threshold`` [I] (first argmax),
        and ``mean_max_box_acc`` [] (MaxBoxAccV2 when the IoU thresholds are 0.3/0.5/0.7)."""
        box_acc = self.correct.astype(jnp.float32) / self.count.astype(jnp.float32)
        best = jnp.argmax(box_acc, axis=1)
        max_box_acc = jnp.max(box_acc, axis=1)
        return {
            "box_acc": box_acc,
            "max_box_acc": max_box_acc,
            "best_threshold": jnp.asarray(self.thresholds, jnp.float32)[best],
            "mean_max_box_acc": jnp.mean(max_box_acc),
        }


def box_accuracy_counts(scoremaps, gt_boxes, gt_valid, thresholds=DEFAULT_THRESHOLDS,
                        iou_thresholds: Sequence[float] = (0.5,), multi_contour: bool = False,
                        valid=None, backend: str = "auto") -> BoxAccuracyCounts:
    """BoxAcc counts of one batch: ``correct[i, t] = Σ_b valid_b · [maxIoU_b(t) >= δ_i]``.

    Args:
      scoremaps: float ``[B, H, W]`` in [0, 1].
      gt_boxes: int ``[B, G, 4]``; gt_valid: bool ``[B, G]``.
      thresholds: concrete ``[T]`` score thresholds in [0, 1].
      iou_thresholds: concrete ``[I]`` IoU thresholds in [0, 1].
      multi_contour: static; False = largest component's box, True = every contour's box.
      valid: optional bool ``[B]``; False rows count zero times.
      backend: box pass, ``"auto"`` | ``"native"`` | ``"xla"`` (``boxes.resolve_backend``).

    Returns:
      :class:`BoxAccuracyCounts`.
    """
    scoremaps = _checks.check_scoremaps(scoremaps)
    batch = scoremaps.shape[0]
    gt_boxes, gt_valid = _checks.check_gt(gt_boxes, gt_valid, batch, scoremaps.shape[1:])
    thresholds = _checks.check_thresholds(thresholds)
    iou_thresholds = _checks.check_thresholds(iou_thresholds, "iou_thresholds")
    valid = _checks.check_valid(valid, batch)
    best_iou = _max_iou(scoremaps, gt_boxes, gt_valid, thresholds, multi_contour,
                        backend)                                              # [B, T]
    return BoxAccuracyCounts.empty(thresholds, iou_thresholds, multi_contour).add_iou(
        best_iou, valid)


def max_box_accuracy(scoremaps, gt_boxes, gt_valid, thresholds=DEFAULT_THRESHOLDS,
                     iou_thresholds: Sequence[float] = (0.5,), multi_contour: bool = False,
                     valid=None, backend: str = "auto") -> dict:
    """MaxBoxAcc of one set of maps (see the module docstring for the definition).

    Args:
      scoremaps: float ``[B, H, W]`` in [0, 1].
      gt_boxes: int ``[B, G, 4]``; gt_valid: bool ``[B, G]``.
      thresholds: concrete ``[T]`` score thresholds in [0, 1].
      iou_thresholds: concrete ``[I]`` IoU thresholds in [0, 1].
      multi_contour: False = largest component's box, True = every contour's box.
      valid: optional bool ``[B]`` (an addition to the DESIGN signature): padded images.
      backend: box pass, ``"auto"`` | ``"native"`` | ``"xla"`` (``boxes.resolve_backend``);
        every backend gives the same result.

    Returns:
      dict: ``box_acc`` float32 ``[I, T]`` (fraction of images correct), ``max_box_acc``
      ``[I]`` (max over thresholds), ``best_threshold`` ``[I]`` (the first threshold reaching
      it), ``mean_max_box_acc`` ``[]``.
    """
    return box_accuracy_counts(scoremaps, gt_boxes, gt_valid, thresholds, iou_thresholds,
                               multi_contour, valid, backend).result()


def max_box_accuracy_v2(scoremaps, gt_boxes, gt_valid, thresholds=DEFAULT_THRESHOLDS,
                        valid=None, backend: str = "auto") -> dict:
    """MaxBoxAccV2: :func:`max_box_accuracy` with IoU 0.3/0.5/0.7 and ``multi_contour=True``.

    Returns:
      The :func:`max_box_accuracy` dict plus ``max_box_acc_v2`` ``[]`` = mean of
      ``max_box_acc`` over the three IoU thresholds.
    """
    result = max_box_accuracy(scoremaps, gt_boxes, gt_valid, thresholds, V2_IOU_THRESHOLDS,
                              True, valid, backend)
    result["max_box_acc_v2"] = result["mean_max_box_acc"]
    return result


# --------------------------------------------------------------------------------------------
# Fixed-threshold localisation + classification
# --------------------------------------------------------------------------------------------
@flax.struct.dataclass
class LocalizationCounts:
    """Streaming counts of top-1/top-5 classification, GT-known Loc and Top-1 Loc.

    Attributes (int32 scalars): ``top1_cls``, ``top5_cls``, ``gt_known_loc``, ``top1_loc``,
    ``count``; static ``cam_threshold``, ``iou_threshold``.
    """
    top1_cls: jax.Array
    top5_cls: jax.Array
    gt_known_loc: jax.Array
    top1_loc: jax.Array
    count: jax.Array
    cam_threshold: float = flax.struct.field(pytree_node=False, default=0.2)
    iou_threshold: float = flax.struct.field(pytree_node=False, default=0.5)

    @classmethod
    def empty(cls, cam_threshold: float = 0.2, iou_threshold: float = 0.5):
        zero = jnp.zeros((), jnp.int32)
        (cam_threshold,) = _checks.check_thresholds([cam_threshold], "cam_threshold")
        (iou_threshold,) = _checks.check_thresholds([iou_threshold], "iou_threshold")
        return cls(zero, zero, zero, zero, zero, cam_threshold, iou_threshold)

    def merge(self, other: LocalizationCounts) -> LocalizationCounts:
        return jax.tree.map(jnp.add, self, other)

    def update(self, logits, labels, scoremaps, gt_boxes, gt_valid, valid=None,
               backend: str = "auto"):
        return self.merge(localization_counts(logits, labels, scoremaps, gt_boxes, gt_valid,
                                              valid, self.cam_threshold, self.iou_threshold,
                                              backend))

    def add(self, top1, top5, gt_known, valid) -> LocalizationCounts:
        """Adds per-image outcomes, bool ``[B]`` each: top-1 / top-5 right, GT-known localised
        (at ``self.cam_threshold``, ``self.iou_threshold``), and ``valid`` (real images)."""
        def count(x):
            return jnp.sum(x & valid, dtype=jnp.int32)

        return self.merge(self.replace(top1_cls=count(top1), top5_cls=count(top5),
                                       gt_known_loc=count(gt_known),
                                       top1_loc=count(gt_known & top1), count=count(valid)))

    def result(self) -> dict:
        """Fractions in [0, 1]: ``top1_cls``, ``top5_cls``, ``gt_known_loc``, ``top1_loc``."""
        n = self.count.astype(jnp.float32)
        return {name: getattr(self, name).astype(jnp.float32) / n
                for name in ("top1_cls", "top5_cls", "gt_known_loc", "top1_loc")}


def localization_counts(logits, labels, scoremaps, gt_boxes, gt_valid, valid=None,
                        cam_threshold: float = 0.2, iou_threshold: float = 0.5,
                        backend: str = "auto") -> LocalizationCounts:
    """Counts of one batch for :class:`LocalizationCounts`.

    Args:
      logits: float ``[B, M]``; labels: int ``[B]`` (ground truth).
      scoremaps: float ``[B, H, W]`` in [0, 1], the ground-truth class's maps.
      gt_boxes: int ``[B, G, 4]``; gt_valid: bool ``[B, G]``.
      valid: optional bool ``[B]``.
      cam_threshold, iou_threshold: static floats in [0, 1].
      backend: box pass, ``"auto"`` | ``"native"`` | ``"xla"`` (``boxes.resolve_backend``).

    Returns:
      :class:`LocalizationCounts`.
    """
    logits, labels = _checks.check_logits_labels(logits, labels)
    valid = _checks.check_valid(valid, logits.shape[0])
    if jnp.asarray(scoremaps).shape[:1] != (logits.shape[0],):
        raise ValueError(
            f"scoremaps must have shape [B, H, W] with B = {logits.shape[0]}, got "
            f"{jnp.asarray(scoremaps).shape}")
    loc = gt_known_loc_correct(scoremaps, gt_boxes, gt_valid, cam_threshold, iou_threshold,
                               backend)
    return LocalizationCounts.empty(cam_threshold, iou_threshold).add(
        topk_correct(logits, labels, 1), topk_correct(logits, labels, 5), loc, valid)

