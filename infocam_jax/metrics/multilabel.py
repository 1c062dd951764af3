"""Multi-label metrics (double-digit MNIST), with mergeable streaming counts.

Definitions (the paper's §3.3 and ``infocam_jax.metrics``' box and IoU conventions):

* Label ``j`` is predicted present iff ``logit_j > 0``
  (``σ(n) > 0.5``; also the PC-sigmoid rule under a uniform test-time prior); per-label
  classification accuracy is the fraction of images where that prediction equals the
  multi-hot target. Localisation is counted over (image, present label) pairs: the box of the
  label's map at ``cam_threshold`` must reach IoU >= ``iou_threshold`` with one of the valid
  GT boxes carrying that label.
* The localisation curve (:class:`LocCurveCounts`) counts the same pairs at every threshold of
  a grid; its argmax on a held-out split is the threshold chosen on validation.

Every ``*_counts`` function returns a ``flax.struct.dataclass`` of int32 counts (a pytree):
merge batches with ``.merge``, sum devices with ``lax.psum``, ``.result()`` gives fractions in
[0, 1] (NaN when nothing was counted). Thresholds are static (compile-time) values.

Checks on concrete values, as in ``metrics.localization`` (``infocam_jax._checks``; the
``ValueError`` names the argument, the first offending index and its value): multi-hot
``targets`` and the masks are 0/1, score maps finite and in [0, 1], valid GT boxes ordered and
inside the ``H x W`` map, and in :func:`multilabel_counts` the valid slots' and boxes' labels in
``[0, M)`` (rows whose mask is False are padding: the pipeline writes -1 there, not checked).
Under ``jit`` nothing of that can be checked: out-of-range labels then match no GT box and no
one-hot column (they count nothing), maps outside [0, 1] are clipped by the box extraction.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from infocam_jax import _checks
from infocam_jax import boxes as boxes_lib


def slot_max_iou(scoremaps, slot_labels, gt_boxes, box_labels, box_valid, thresholds,
                 **box_options):
    """Best IoU of each slot's largest box with the GT boxes of the slot's label.

    Args:
      scoremaps: float ``[B, L, H, W]`` in [0, 1]: the map of label ``slot_labels[b, l]``.
      slot_labels: int ``[B, L]``.
      gt_boxes: int ``[B, G, 4]``; box_labels: int ``[B, G]``; box_valid: bool ``[B, G]``.
      thresholds: concrete ``[T]`` score thresholds in [0, 1].
      **box_options: passed to ``boxes.max_contour_iou`` (e.g. a box backend).

    Returns:
      float32 ``[B, L, T]`` (0 where the label has no valid GT box).
    """
    batch, slots, height, width = scoremaps.shape
    num_gt = gt_boxes.shape[1]
    pair_valid = box_valid[:, None, :] & (box_labels[:, None, :] == slot_labels[:, :, None])
    best = boxes_lib.max_contour_iou(
        scoremaps.reshape(batch * slots, height, width), np.asarray(thresholds, np.float64),
        jnp.broadcast_to(gt_boxes[:, None], (batch, slots, num_gt, 4)).reshape(-1, num_gt, 4),
        pair_valid.reshape(batch * slots, num_gt), multi_contour=False, **box_options)
    return jnp.asarray(best, jnp.float32).reshape(batch, slots, -1)


def _check_multihot(logits, targets):
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, M] (rank 2), got shape {logits.shape}")
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets must have shape [B, M] = {logits.shape} (multi-hot), got {targets.shape}")
    _checks.check_mask_values(targets, "targets")
    return logits, targets


def multilabel_cls_correct(logits, targets):
    """Per-label correctness: ``(logits > 0) == (targets > 0.5)``.

    Args:
      logits: float ``[B, M]``; targets: multi-hot ``[B, M]`` (0/1, float or bool).

    Returns:
      bool ``[B, M]``.
    """
    logits, targets = _check_multihot(logits, targets)
    return (logits > 0) == (targets.astype(jnp.float32) > 0.5)


def present_label_slots(targets, max_labels: int):
    """The first ``max_labels`` present labels of each image, in increasing label order.

    Args:
      targets: multi-hot ``[B, M]``.
      max_labels: static ``L`` (<= M). Images with more than L present labels keep the L
        lowest ones.

    Returns:
      ``(slot_labels int32 [B, L], slot_valid bool [B, L])``; invalid slots hold label 0.
    """
    targets = jnp.asarray(targets)
    if targets.ndim != 2:
        raise ValueError(f"targets must have shape [B, M] (rank 2), got {targets.shape}")
    num_labels = targets.shape[1]
    if not isinstance(max_labels, (int, np.integer)) or not 1 <= max_labels <= num_labels:
        raise ValueError(f"max_labels must be an int in [1, {num_labels}], got {max_labels!r}")
    present = targets.astype(jnp.float32) > 0.5
    # Present labels first, then by label index: key = present * M + (M - 1 - index).
    key = present.astype(jnp.int32) * num_labels + (num_labels - 1 - jnp.arange(num_labels))
    _, order = lax.top_k(key, int(max_labels))
    slot_valid = jnp.take_along_axis(present, order, axis=1)
    return jnp.where(slot_valid, order, 0).astype(jnp.int32), slot_valid


def multilabel_loc_correct(scoremaps, slot_labels, slot_valid, gt_boxes, box_labels,
                           box_valid, cam_threshold: float = 0.2, iou_threshold: float = 0.5,
                           backend: str = "auto"):
    """Localisation per (image, label) slot.

    Slot ``(b, l)`` is correct when the largest box of ``scoremaps[b, l]`` at
    ``cam_threshold`` reaches IoU >= ``iou_threshold`` with a valid GT box of image ``b``
    whose label is ``slot_labels[b, l]``.

    Args:
      scoremaps: float ``[B, L, H, W]`` in [0, 1]: the map of label ``slot_labels[b, l]``.
      slot_labels: int ``[B, L]``; slot_valid: bool ``[B, L]`` (e.g. from
        :func:`present_label_slots`, or ``L = M`` with every label and ``targets > 0.5``).
      gt_boxes: int ``[B, G, 4]``; box_labels: int ``[B, G]``; box_valid: bool ``[B, G]``.
      cam_threshold, iou_threshold: static floats in [0, 1].
      backend: box pass, ``"auto"`` | ``"native"`` | ``"xla"`` (``boxes.resolve_backend``).

    Returns:
      bool ``[B, L]`` (False on invalid slots).
    """
    scoremaps = _checks.check_scoremaps(scoremaps, rank=4)
    batch, slots, height, width = scoremaps.shape
    slot_labels = jnp.asarray(slot_labels)
    slot_valid = jnp.asarray(slot_valid)
    for name, x in (("slot_labels", slot_labels), ("slot_valid", slot_valid)):
        if x.shape != (batch, slots):
            raise ValueError(f"{name} must have shape [B, L] = {(batch, slots)}, got {x.shape}")
    _checks.check_mask_values(slot_valid, "slot_valid")
    gt_boxes, box_valid = _checks.check_gt(gt_boxes, box_valid, batch, (height, width),
                                           valid_name="box_valid")
    box_labels = jnp.asarray(box_labels)
    if box_labels.shape != box_valid.shape:
        raise ValueError(
            f"box_labels must have shape [B, G] = {box_valid.shape}, got {box_labels.shape}")
    (t,) = _checks.check_thresholds([cam_threshold], "cam_threshold")
    (delta,) = _checks.check_thresholds([iou_threshold], "iou_threshold")
    best = slot_max_iou(scoremaps, slot_labels, gt_boxes, box_labels, box_valid, (t,),
                        backend=backend)
    return (best[..., 0] >= delta) & slot_valid.astype(bool)


@flax.struct.dataclass
class MultiLabelCounts:
    """Streaming multi-label counts (double-digit MNIST).

    Attributes:
      cls_correct: int32 ``[M]``: images whose label-j prediction matches the target.
      count: int32 ``[]``: images counted.
      loc_correct: int32 ``[M]``: localised (image, present label j) pairs.
      loc_count: int32 ``[M]``: (image, present label j) pairs counted.
      cam_threshold, iou_threshold: static floats.
    """
    cls_correct: jax.Array
    count: jax.Array
    loc_correct: jax.Array
    loc_count: jax.Array
    cam_threshold: float = flax.struct.field(pytree_node=False, default=0.2)
    iou_threshold: float = flax.struct.field(pytree_node=False, default=0.5)

    @classmethod
    def empty(cls, num_labels: int, cam_threshold: float = 0.2, iou_threshold: float = 0.5):
        zeros = jnp.zeros((num_labels,), jnp.int32)
        (cam_threshold,) = _checks.check_thresholds([cam_threshold], "cam_threshold")
        (iou_threshold,) = _checks.check_thresholds([iou_threshold], "iou_threshold")
        return cls(zeros, jnp.zeros((), jnp.int32), zeros, zeros, cam_threshold, iou_threshold)

    def merge(self, other: MultiLabelCounts) -> MultiLabelCounts:
        return jax.tree.map(jnp.add, self, other)

    def update(self, logits, targets, scoremaps, slot_labels, slot_valid, gt_boxes,
               box_labels, box_valid, valid=None) -> MultiLabelCounts:
        return self.merge(multilabel_counts(
            logits, targets, scoremaps, slot_labels, slot_valid, gt_boxes, box_labels,
            box_valid, valid, self.cam_threshold, self.iou_threshold))

    def result(self) -> dict:
        """Fractions: ``cls_acc`` [M] per label, ``mean_cls_acc`` [], ``loc_acc`` [M] per
        label over its present pairs, ``loc_acc_all`` [] over all (image, present label)
        pairs."""
        cls_acc = self.cls_correct.astype(jnp.float32) / self.count.astype(jnp.float32)
        return {
            "cls_acc": cls_acc,
            "mean_cls_acc": jnp.mean(cls_acc),
            "loc_acc": self.loc_correct.astype(jnp.float32) / self.loc_count.astype(jnp.float32),
            "loc_acc_all": (jnp.sum(self.loc_correct).astype(jnp.float32)
                            / jnp.sum(self.loc_count).astype(jnp.float32)),
        }


def multilabel_counts(logits, targets, scoremaps, slot_labels, slot_valid, gt_boxes,
                      box_labels, box_valid, valid=None, cam_threshold: float = 0.2,
                      iou_threshold: float = 0.5) -> MultiLabelCounts:
    """Counts of one batch for :class:`MultiLabelCounts`.

    Args:
      logits: float ``[B, M]``; targets: multi-hot ``[B, M]``.
      scoremaps, slot_labels, slot_valid, gt_boxes, box_labels, box_valid: as in
        :func:`multilabel_loc_correct`; slots should be the present labels (a slot whose
        label is absent from ``targets`` is still counted as a pair).
      valid: optional bool ``[B]``.
      cam_threshold, iou_threshold: static floats in [0, 1].

    Returns:
      :class:`MultiLabelCounts`.
    """
    logits, targets = _check_multihot(logits, targets)
    batch, num_labels = logits.shape
    valid = _checks.check_valid(valid, batch)
    loc = multilabel_loc_correct(scoremaps, slot_labels, slot_valid, gt_boxes, box_labels,
                                 box_valid, cam_threshold, iou_threshold)  # checks the shapes
    for name, labels, where in (("slot_labels", slot_labels, slot_valid),
                                ("box_labels", box_labels, box_valid)):
        _checks.check_label_values(labels, num_labels, name=name,
                                   classes_from="M = logits.shape[1]", where=where)
    return counts_from_slots(multilabel_cls_correct(logits, targets), valid, loc, slot_labels,
                             slot_valid, cam_threshold, iou_threshold)


def counts_from_slots(cls_correct, valid, loc_correct, slot_labels, slot_valid,
                      cam_threshold: float = 0.2, iou_threshold: float = 0.5
                      ) -> MultiLabelCounts:
    """:class:`MultiLabelCounts` of per-label and per-slot outcomes already computed.

    Args:
      cls_correct: bool ``[B, M]`` (:func:`multilabel_cls_correct`).
      valid: bool ``[B]`` real (non-padding) images.
      loc_correct: bool ``[B, L]`` slots localised (e.g. :func:`slot_max_iou` >= IoU threshold).
      slot_labels: int ``[B, L]``; slot_valid: bool ``[B, L]``.
      cam_threshold, iou_threshold: static floats recorded in the counts.

    Concrete values are checked (traced ones are not: a label outside ``[0, M)`` then counts
    nothing): ``valid`` and ``slot_valid`` are 0/1, and the labels of the counted slots lie in
    ``[0, M)`` (ValueError naming the argument, the first offending index and its value).
    """
    num_labels = cls_correct.shape[1]
    _checks.check_mask_values(valid, "valid")
    _checks.check_mask_values(slot_valid, "slot_valid")
    valid = jnp.asarray(valid).astype(bool)
    counted = jnp.asarray(slot_valid).astype(bool) & valid[:, None]
    _checks.check_label_values(slot_labels, num_labels, name="slot_labels",
                               classes_from="M = cls_correct.shape[1]", where=counted)
    onehot = jax.nn.one_hot(jnp.asarray(slot_labels), num_labels, dtype=jnp.int32)  # [B,L,M]
    (cam_threshold,) = _checks.check_thresholds([cam_threshold], "cam_threshold")
    (iou_threshold,) = _checks.check_thresholds([iou_threshold], "iou_threshold")
    return MultiLabelCounts(
        jnp.sum(cls_correct & valid[:, None], axis=0, dtype=jnp.int32),
        jnp.sum(valid, dtype=jnp.int32),
        jnp.sum(onehot * (loc_correct & counted)[..., None], axis=(0, 1), dtype=jnp.int32),
        jnp.sum(onehot * counted[..., None], axis=(0, 1), dtype=jnp.int32),
        cam_threshold, iou_threshold)


@flax.struct.dataclass
class LocCurveCounts:
    """Streaming multi-label localisation counts at every threshold of a grid.

    Attributes:
      correct: int32 ``[M, T]``: localised (image, present label j) pairs per threshold.
      count: int32 ``[M]``: (image, present label j) pairs counted.
      thresholds: static tuple of ``T`` score thresholds.
      iou_threshold: static float.
    """
    correct: jax.Array
    count: jax.Array
    thresholds: tuple = flax.struct.field(pytree_node=False, default=())
    iou_threshold: float = flax.struct.field(pytree_node=False, default=0.5)

    @classmethod
    def empty(cls, num_labels: int, thresholds, iou_threshold: float = 0.5):
        thresholds = _checks.check_thresholds(thresholds)
        (iou_threshold,) = _checks.check_thresholds([iou_threshold], "iou_threshold")
        return cls(jnp.zeros((num_labels, len(thresholds)), jnp.int32),
                   jnp.zeros((num_labels,), jnp.int32), thresholds, iou_threshold)

    def merge(self, other: LocCurveCounts) -> LocCurveCounts:
        return jax.tree.map(jnp.add, self, other)

    def add(self, best_iou, slot_labels, counted) -> LocCurveCounts:
        """Adds slots: ``best_iou`` float ``[B, L, T]`` (:func:`slot_max_iou` at
        ``self.thresholds``), ``slot_labels`` int ``[B, L]``, ``counted`` bool ``[B, L]``."""
        onehot = jax.nn.one_hot(slot_labels, self.correct.shape[0], dtype=jnp.int32)  # [B,L,M]
        hit = (best_iou >= self.iou_threshold) & counted[..., None]                   # [B,L,T]
        return self.merge(self.replace(
            correct=jnp.einsum("blm,blt->mt", onehot, hit.astype(jnp.int32)),
            count=jnp.sum(onehot * counted[..., None], axis=(0, 1), dtype=jnp.int32)))

    def result(self) -> dict:
        """Fractions: ``loc_acc`` [M, T] per label, ``loc_acc_all`` [T] over all pairs."""
        correct = self.correct.astype(jnp.float32)
        count = self.count.astype(jnp.float32)
        return {"loc_acc": correct / count[:, None],
                "loc_acc_all": jnp.sum(correct, axis=0) / jnp.sum(count)}
