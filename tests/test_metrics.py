"""metrics.py against a NumPy + OpenCV statement of the WSOL protocol (Choe et al., CVPR 2020).

Box extraction is infocam_jax.boxes (a teammate's module). Tests parametrised over ``backend``
run twice: with ``"reference"`` (metrics' box extraction replaced by the OpenCV reference
below through ``jax.pure_callback``: checks the counting, masking and aggregation) and with
``"boxes"`` (the real module: the end-to-end comparison).
"""
import types

import chex
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from infocam_jax import metrics
from infocam_jax.metrics import localization, multilabel


# ------------------------------------------------------------------ NumPy / OpenCV reference
def np_iou(a, b):
    """Inclusive IoU, intersection clamped at 0; a [N, 4], b [G, 4] -> [N, G]."""
    a = np.asarray(a, np.float64)[:, None]
    b = np.asarray(b, np.float64)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0, None)
    inter = iw * ih
    def area(x):
        return (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)
    return inter / (area(a) + area(b) - inter)


def ref_boxes(scoremap, threshold, multi_contour):
    """The protocol on one map: uint8, strict > int(t*max), contours, bounding rectangles."""
    height, width = scoremap.shape
    q = np.floor(np.asarray(scoremap, np.float64) * 255).astype(np.uint8)
    _, binary = cv2.threshold(q, int(threshold * np.max(q)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return np.zeros((1, 4), np.int64)
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    out = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        out.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return np.array(out)


def ref_max_iou(scoremap, thresholds, gt_boxes, gt_valid, multi_contour):
    """[T]: max IoU over the considered boxes and the valid GT boxes (0 without GT)."""
    gt = np.asarray(gt_boxes)[np.asarray(gt_valid, bool)]
    if len(gt) == 0:
        return np.zeros(len(thresholds))
    return np.array([np_iou(ref_boxes(scoremap, t, multi_contour), gt).max()
                     for t in thresholds])


def ref_max_contour_iou(scoremaps, thresholds, gt_boxes, gt_valid, multi_contour, backend="auto"):
    """Stand-in for boxes.max_contour_iou: the reference through a host callback (any backend)."""
    thresholds = np.asarray(thresholds, np.float64)

    def host(s, g, v):
        return np.stack([ref_max_iou(s[b], thresholds, g[b], v[b], multi_contour)
                         for b in range(s.shape[0])]).astype(np.float32)

    shape = jax.ShapeDtypeStruct((scoremaps.shape[0], len(thresholds)), jnp.float32)
    return jax.pure_callback(host, shape, scoremaps, gt_boxes, gt_valid)


@pytest.fixture(params=["reference", "boxes"])
def backend(request, monkeypatch):
    if request.param == "reference":
        stub = types.SimpleNamespace(max_contour_iou=ref_max_contour_iou)
        monkeypatch.setattr(localization, "boxes_lib", stub)
        monkeypatch.setattr(multilabel, "boxes_lib", stub)
    return request.param


# ------------------------------------------------------------------ inputs
def blob_maps(rng, batch, height, width, blobs=3):
    """Random multi-blob maps in [0, 1], values at (q + 0.5)/255 so uint8 quantisation is exact."""
    yy, xx = np.mgrid[:height, :width]
    maps = np.zeros((batch, height, width))
    for b in range(batch):
        for _ in range(blobs):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            sy, sx = rng.uniform(1.5, 6), rng.uniform(1.5, 6)
            maps[b] += rng.uniform(0.3, 1) * np.exp(-((yy - cy) / sy) ** 2 - ((xx - cx) / sx) ** 2)
        maps[b] = (maps[b] - maps[b].min()) / (maps[b].max() - maps[b].min())
    return ((np.floor(maps * 254.999) + 0.5) / 255).astype(np.float32)


def random_gt(rng, batch, height, width, num_gt=2):
    x0 = rng.integers(0, width - 8, (batch, num_gt))
    y0 = rng.integers(0, height - 8, (batch, num_gt))
    x1 = np.minimum(x0 + rng.integers(4, 20, (batch, num_gt)), width - 1)
    y1 = np.minimum(y0 + rng.integers(4, 20, (batch, num_gt)), height - 1)
    valid = np.ones((batch, num_gt), bool)
    valid[::2, 1] = False
    return np.stack([x0, y0, x1, y1], -1).astype(np.int32), valid


@pytest.fixture(scope="module")
def wsol_batch():
    rng = np.random.default_rng(0)
    maps = blob_maps(rng, 8, 32, 32)
    gt_boxes, gt_valid = random_gt(rng, 8, 32, 32)
    # Make some images easy: GT = the reference's largest box at a mid threshold.
    for b in range(0, 8, 3):
        gt_boxes[b, 0] = ref_boxes(maps[b], 0.3, False)[0]
    return maps, gt_boxes, gt_valid


THRESHOLDS = np.array([0.0, 0.2, 0.4, 0.6, 0.8])


def ref_box_acc(maps, gt_boxes, gt_valid, thresholds, iou_thresholds, multi_contour):
    best = np.stack([ref_max_iou(maps[b], thresholds, gt_boxes[b], gt_valid[b], multi_contour)
                     for b in range(len(maps))])
    return np.stack([(best >= d).mean(0) for d in iou_thresholds])


# ------------------------------------------------------------------ IoU / top-k
def test_iou_known_values_and_clamp():
    a = np.array([0, 0, 9, 9])
    b = np.array([[5, 5, 14, 14], [0, 0, 9, 9], [20, 20, 30, 30], [5, 5, 6, 6], [0, 0, 0, 0]])
    np.testing.assert_allclose(metrics.iou(a, b), [25 / 175, 1.0, 0.0, 4 / 100, 1 / 100])
    # Disjoint on both axes: the unclamped product (-3)(-3) would be positive; clamped it is 0.
    assert float(metrics.iou(np.array([0, 0, 1, 1]), np.array([5, 5, 6, 6]))) == 0.0


def test_iou_matches_numpy_and_broadcasts():
    rng = np.random.default_rng(1)
    lo = rng.integers(0, 30, (6, 4, 2))
    boxes = np.concatenate([lo, lo + rng.integers(0, 15, (6, 4, 2))], -1)
    a, g = boxes[:, 0], boxes[:, 1:]
    out = metrics.iou(a[:, None], g)
    chex.assert_shape(out, (6, 3))
    ref = np.stack([np_iou(a[i:i + 1], g[i])[0] for i in range(6)])
    np.testing.assert_allclose(out, ref, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_topk_correct(k):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(20, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 20)
    ref = np.array([y in np.argsort(-n)[:k] for n, y in zip(logits, labels)])
    np.testing.assert_array_equal(metrics.topk_correct(logits, labels, k), ref)


# ------------------------------------------------------------------ MaxBoxAcc
def test_reference_box_convention():
    """The protocol's box of a 16 x 8 rectangle at x=4..19, y=8..15 is (4, 8, 20, 16)."""
    m = np.zeros((32, 32), np.float32)
    m[8:16, 4:20] = 1.0
    np.testing.assert_array_equal(ref_boxes(m, 0.2, False), [[4, 8, 20, 16]])
    np.testing.assert_array_equal(ref_boxes(np.zeros((8, 8)), 0.2, False), [[0, 0, 0, 0]])


@pytest.mark.parametrize("multi_contour", [False, True])
def test_max_box_accuracy_matches_reference(backend, wsol_batch, multi_contour):
    maps, gt_boxes, gt_valid = wsol_batch
    ious = (0.3, 0.5, 0.7)
    out = metrics.max_box_accuracy(maps, gt_boxes, gt_valid, THRESHOLDS, ious, multi_contour)
    ref = ref_box_acc(maps, gt_boxes, gt_valid, THRESHOLDS, ious, multi_contour)
    chex.assert_shape(out["box_acc"], (3, len(THRESHOLDS)))
    np.testing.assert_allclose(out["box_acc"], ref, atol=1e-6)
    np.testing.assert_allclose(out["max_box_acc"], ref.max(1), atol=1e-6)
    np.testing.assert_allclose(out["best_threshold"], THRESHOLDS[ref.argmax(1)], atol=1e-6)
    assert ref.max() > 0 and ref.min() < 1  # the case is not trivial


def test_max_box_accuracy_v2(backend, wsol_batch):
    maps, gt_boxes, gt_valid = wsol_batch
    out = metrics.max_box_accuracy_v2(maps, gt_boxes, gt_valid, THRESHOLDS)
    ref = ref_box_acc(maps, gt_boxes, gt_valid, THRESHOLDS, (0.3, 0.5, 0.7), True)
    np.testing.assert_allclose(out["max_box_acc_v2"], ref.max(1).mean(), atol=1e-6)


def test_counts_merge_psum_and_valid_mask(backend, wsol_batch):
    maps, gt_boxes, gt_valid = wsol_batch
    whole = metrics.box_accuracy_counts(maps, gt_boxes, gt_valid, THRESHOLDS, (0.5,))
    # Two batches of 8 (one shape: one compilation), padded with copies marked invalid.
    def part(x, lo, hi):
        return np.concatenate([x[lo:hi], x[:8 - (hi - lo)]])

    valid1, valid2 = np.arange(8) < 5, np.arange(8) < 3
    first = metrics.box_accuracy_counts(part(maps, 0, 5), part(gt_boxes, 0, 5),
                                        part(gt_valid, 0, 5), THRESHOLDS, valid=valid1)
    second = metrics.box_accuracy_counts(part(maps, 5, 8), part(gt_boxes, 5, 8),
                                         part(gt_valid, 5, 8), THRESHOLDS, valid=valid2)
    merged = first.merge(second)
    chex.assert_trees_all_equal(merged, whole)
    # Streaming update from empty gives the same.
    acc = metrics.BoxAccuracyCounts.empty(THRESHOLDS, (0.5,))
    acc = acc.update(part(maps, 0, 5), part(gt_boxes, 0, 5), part(gt_valid, 0, 5), valid1)
    acc = acc.update(part(maps, 5, 8), part(gt_boxes, 5, 8), part(gt_valid, 5, 8), valid2)
    chex.assert_trees_all_equal(acc, whole)
    # Across devices: lax.psum of the pytree (vmap with a named axis stands in for pmap).
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), first, second)
    summed = jax.vmap(lambda c: lax.psum(c, "devices"), axis_name="devices")(stacked)
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[0], summed), whole)
    np.testing.assert_allclose(
        merged.result()["box_acc"],
        ref_box_acc(maps, gt_boxes, gt_valid, THRESHOLDS, (0.5,), False), atol=1e-6)


def test_box_counts_under_jit(backend, wsol_batch):
    maps, gt_boxes, gt_valid = wsol_batch
    acc = metrics.BoxAccuracyCounts.empty(THRESHOLDS, (0.3, 0.5, 0.7), True)
    jitted = jax.jit(lambda a, *x: a.update(*x))(acc, maps, gt_boxes, gt_valid)
    chex.assert_trees_all_equal(jitted, acc.update(maps, gt_boxes, gt_valid))


def test_no_valid_gt_is_never_correct(backend, wsol_batch):
    maps, gt_boxes, _ = wsol_batch
    out = metrics.max_box_accuracy(maps, gt_boxes, np.zeros(gt_boxes.shape[:2], bool),
                                   THRESHOLDS)
    np.testing.assert_array_equal(out["box_acc"], 0.0)


# ------------------------------------------------------------------ fixed-threshold localisation
@pytest.fixture(scope="module")
def known_batch():
    """4 images with one rectangle blob; GT matches it on images 0, 1, not on 2, 3; images 4-7
    are padding (copies of image 0). Logits: top-1 right on 0, 2; label in top-5 (not top-1)
    on 1; wrong on 3. Batch 8, 32 x 32 like the other box tests (one compilation)."""
    maps = np.zeros((8, 32, 32), np.float32)
    maps[:, 8:16, 4:20] = 1.0
    maps[:, 20:22, 25:27] = 0.5  # a smaller second blob
    gt = np.zeros((8, 2, 4), np.int32)
    gt[:, 0] = [4, 8, 19, 15]
    gt[2:4, 0] = [24, 24, 31, 31]
    gt[3, 1] = [25, 20, 26, 21]  # second GT box on the small blob: IoU 4/12 < 0.5
    gt_valid = np.zeros((8, 2), bool)
    gt_valid[:, 0] = True
    gt_valid[3, 1] = True
    logits = np.tile(np.arange(10, dtype=np.float32)[::-1], (8, 1))  # class 0 ranks first
    labels = np.array([0, 3, 0, 8, 0, 0, 0, 0], np.int32)
    valid = np.arange(8) < 4
    return maps, gt, gt_valid, logits, labels, valid


def test_gt_known_and_top1_loc(backend, known_batch):
    maps, gt, gt_valid, logits, labels, _ = known_batch
    np.testing.assert_array_equal(metrics.gt_known_loc_correct(maps, gt, gt_valid),
                                  [1, 1, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(metrics.top1_loc_correct(logits, labels, maps, gt, gt_valid),
                                  [1, 0, 0, 0, 1, 1, 1, 1])
    # A GT box that only the small blob matches is missed at IoU 0.5 (largest box only).
    gt_small = np.array([[[25, 20, 27, 22], [0, 0, 0, 0]]] * 8, np.int32)
    np.testing.assert_array_equal(
        metrics.gt_known_loc_correct(maps, gt_small, np.arange(2) < np.ones((8, 1))), [0] * 8)


def test_localization_counts(backend, known_batch):
    maps, gt, gt_valid, logits, labels, valid = known_batch
    counts = metrics.localization_counts(logits, labels, maps, gt, gt_valid, valid)
    result = counts.result()
    np.testing.assert_allclose([result[k] for k in ("top1_cls", "top5_cls", "gt_known_loc",
                                                     "top1_loc")], [0.5, 0.75, 0.5, 0.25])
    acc = metrics.LocalizationCounts.empty().update(logits, labels, maps, gt, gt_valid, valid)
    chex.assert_trees_all_equal(acc, counts)


def test_localization_counts_under_jit(backend, known_batch):
    maps, gt, gt_valid, logits, labels, valid = known_batch
    jitted = jax.jit(metrics.localization_counts)(logits, labels, maps, gt, gt_valid, valid)
    chex.assert_trees_all_equal(
        jitted, metrics.localization_counts(logits, labels, maps, gt, gt_valid, valid))


# ------------------------------------------------------------------ multi-label
def test_multilabel_cls_correct_and_slots():
    logits = np.array([[2.0, -1.0, 0.0, 3.0], [-1.0, -2.0, 1.0, -0.5]], np.float32)
    targets = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], np.float32)
    np.testing.assert_array_equal(multilabel.multilabel_cls_correct(logits, targets),
                                  [[1, 1, 0, 1], [1, 1, 1, 1]])
    slots, slot_valid = multilabel.present_label_slots(targets, 2)
    np.testing.assert_array_equal(slots, [[0, 2], [2, 0]])
    np.testing.assert_array_equal(slot_valid, [[1, 1], [1, 0]])


def test_multilabel_counts(backend):
    """Double-digit canvases: digit blobs left and/or right, one map per label slot.

    4 images x 2 slots of 32 x 32 maps = the [8, 32, 32] shape of the other box tests."""
    num_labels = 4
    maps = np.zeros((4, 2, 32, 32), np.float32)
    maps[:, 0, 8:24, 2:14] = 1.0   # slot 0 map: lights the left digit
    maps[:, 1, 8:24, 18:30] = 1.0  # slot 1 map: lights the right digit
    maps[2, 1] = 0.0
    maps[2, 1, 8:24, 2:14] = 1.0   # image 2: slot 1's map lights the wrong digit
    maps[3, 1] = 0.0               # image 3: one digit only
    slot_labels = np.array([[1, 3], [2, 2], [0, 3], [1, 0]], np.int32)
    slot_valid = np.array([[1, 1], [1, 0], [1, 1], [1, 0]], bool)
    gt = np.array([[[2, 8, 13, 23], [18, 8, 29, 23]]] * 4, np.int32)
    box_labels = np.array([[1, 3], [2, 2], [0, 3], [1, 0]], np.int32)
    box_valid = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], bool)
    # Image 1 has the digit 2 twice: one pair, correct if either GT box is matched.
    loc = multilabel.multilabel_loc_correct(maps, slot_labels, slot_valid, gt, box_labels, box_valid)
    np.testing.assert_array_equal(loc, [[1, 1], [1, 0], [1, 0], [1, 0]])
    # A map against a GT box of another label does not count.
    wrong_labels = np.array([[3, 1], [2, 2], [0, 3], [1, 0]], np.int32)
    np.testing.assert_array_equal(
        multilabel.multilabel_loc_correct(maps, wrong_labels, slot_valid, gt, box_labels,
                                       box_valid)[0], [0, 0])

    targets = np.zeros((4, num_labels), np.float32)
    for b in range(4):
        targets[b, slot_labels[b][slot_valid[b]]] = 1
    logits = np.where(targets > 0, 1.0, -1.0).astype(np.float32)
    logits[0, 0] = 2.0  # one false positive on label 0
    counts = multilabel.multilabel_counts(logits, targets, maps, slot_labels, slot_valid, gt,
                                       box_labels, box_valid)
    result = counts.result()
    np.testing.assert_allclose(result["cls_acc"], [3 / 4, 1, 1, 1])
    np.testing.assert_array_equal(counts.loc_count, [1, 2, 1, 2])
    np.testing.assert_array_equal(counts.loc_correct, [1, 2, 1, 1])
    np.testing.assert_allclose(result["loc_acc"], [1, 1, 1, 0.5])
    np.testing.assert_allclose(result["loc_acc_all"], 5 / 6)
    masked = multilabel.MultiLabelCounts.empty(num_labels).update(
        logits, targets, maps, slot_labels, slot_valid, gt, box_labels, box_valid,
        valid=np.array([1, 1, 0, 1], bool))
    np.testing.assert_array_equal(masked.loc_count, [0, 2, 1, 1])
    assert int(masked.count) == 3


# ------------------------------------------------------------------ bad input
def _bad_input_cases():
    maps = np.full((2, 8, 8), 0.5, np.float32)
    gt = np.array([[[0, 0, 3, 3]], [[1, 1, 4, 4]]], np.int32)
    valid = np.ones((2, 1), bool)
    flipped = gt.copy()
    flipped[1, 0] = [4, 1, 1, 4]
    logits = np.zeros((2, 3), np.float32)
    return [
        (lambda: metrics.max_box_accuracy(maps, gt, valid, [0.1, 1.2]), r"thresholds must lie"),
        (lambda: metrics.max_box_accuracy(maps, gt, valid, [-0.1]), "thresholds"),
        (lambda: metrics.max_box_accuracy(maps, gt, valid, [[0.1]]), "thresholds"),
        (lambda: metrics.max_box_accuracy(maps, gt, valid, [0.5], (1.5,)), "iou_thresholds"),
        (lambda: metrics.max_box_accuracy(maps[0], gt, valid, [0.5]), "scoremaps"),
        (lambda: metrics.max_box_accuracy(maps + 1, gt, valid, [0.5]), "scoremaps"),
        (lambda: metrics.max_box_accuracy(maps, gt[0], valid, [0.5]), "gt_boxes"),
        (lambda: metrics.max_box_accuracy(maps, gt[..., :3], valid, [0.5]), "gt_boxes"),
        (lambda: metrics.max_box_accuracy(maps, gt.astype(float), valid, [0.5]), "gt_boxes"),
        (lambda: metrics.max_box_accuracy(maps, gt, valid[:, 0], [0.5]), "gt_valid"),
        (lambda: metrics.max_box_accuracy(maps, flipped, valid, [0.5]), r"x0 <= x1"),
        (lambda: metrics.max_box_accuracy(maps, gt, valid, [0.5], valid=np.ones(3, bool)),
         "valid"),
        (lambda: jax.jit(lambda t: metrics.max_box_accuracy(maps, gt, valid, t))(
            jnp.array([0.5])), "concrete"),
        (lambda: metrics.gt_known_loc_correct(maps, gt, valid, cam_threshold=2.0),
         "cam_threshold"),
        (lambda: metrics.iou(np.array([5, 0, 1, 3]), gt), "boxes_a"),
        (lambda: metrics.iou(gt, np.array([0, 0, 1])), "boxes_b"),
        (lambda: metrics.topk_correct(logits, np.array([0, 3])), r"labels must lie in \[0, 3\)"),
        (lambda: metrics.topk_correct(logits, np.array([0])), "labels"),
        (lambda: metrics.topk_correct(logits, np.array([0, 1]), 0), "k"),
        (lambda: metrics.localization_counts(logits, np.array([0, 1]), maps[:1], gt, valid),
         "scoremaps"),
        (lambda: multilabel.multilabel_cls_correct(logits, np.zeros((2, 4))), "targets"),
        (lambda: multilabel.present_label_slots(np.zeros((2, 3)), 4), "max_labels"),
        (lambda: multilabel.multilabel_loc_correct(maps, np.zeros((2, 1)), np.ones((2, 1), bool),
                                                gt, np.zeros((2, 1)), valid), "scoremaps"),
        (lambda: multilabel.multilabel_loc_correct(maps[:, None], np.zeros((2, 2)),
                                                np.ones((2, 1), bool), gt, np.zeros((2, 1)),
                                                valid), "slot_labels"),
        (lambda: multilabel.multilabel_loc_correct(maps[:, None], np.zeros((2, 1)),
                                                np.ones((2, 1), bool), gt, np.zeros((2, 2)),
                                                valid), "box_labels"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_input_cases())))
def test_bad_input_raises(case):
    call, match = _bad_input_cases()[case]
    with pytest.raises(ValueError, match=match):
        call()



# ------------------------------------------------------------------ value checks (first index)
_MAPS = np.full((2, 8, 8), 0.5, np.float32)
_GT = np.array([[[0, 0, 3, 3], [0, 0, 0, 0]], [[1, 1, 4, 4], [0, 0, 0, 0]]], np.int32)
_GT_VALID = np.array([[True, False], [True, False]])
_LOGITS = np.zeros((2, 3), np.float32)


def _put(array, index, value):
    out = np.array(array, copy=True)
    out[index] = value
    return out


def _value_cases():
    """(call, message): concrete bad values at every metrics entry."""
    bad_gt = _put(_GT, (1, 0), [4, 1, 1, 4])
    outside = _put(_GT, (1, 0), [1, 1, 8, 4])
    nan_maps = _put(_MAPS, (0, 1, 2), np.nan)
    ml_maps = np.full((2, 1, 8, 8), 0.5, np.float32)
    targets = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    slots, slot_valid = np.array([[0], [1]]), np.ones((2, 1), bool)
    box_labels = np.array([[0, -1], [1, -1]])                  # -1: padding, not checked

    def ml(**kw):
        args = dict(logits=_LOGITS, targets=targets, scoremaps=ml_maps, slot_labels=slots,
                    slot_valid=slot_valid, gt_boxes=_GT, box_labels=box_labels,
                    box_valid=_GT_VALID)
        return lambda: multilabel.multilabel_counts(**{**args, **kw})

    return [
        (lambda: metrics.localization_counts(_LOGITS, [0, 3], _MAPS, _GT, _GT_VALID),
         r"labels must lie in \[0, 3\) \(M = logits.shape\[1\]\), got labels\[1\] = 3"),
        (lambda: metrics.topk_correct(_LOGITS, [-1, 0]), r"got labels\[0\] = -1"),
        (lambda: metrics.max_box_accuracy(_MAPS, bad_gt, _GT_VALID, [0.5]),
         r"gt_boxes must satisfy x0 <= x1 and y0 <= y1, got gt_boxes\[1, 0\] = \[4, 1, 1, 4\]"),
        (lambda: metrics.max_box_accuracy_v2(_MAPS, outside, _GT_VALID, [0.5]),
         r"< W = 8 .*inside the 8 x 8 image.*gt_boxes\[1, 0\] = \[1, 1, 8, 4\]"),
        (lambda: metrics.gt_known_loc_correct(nan_maps, _GT, _GT_VALID),
         r"scoremaps must lie in \[0, 1\] and be finite .*scoremaps\[0, 1, 2\] = nan"),
        (lambda: metrics.box_accuracy_counts(_MAPS, _GT, _GT_VALID, [0.5],
                                             valid=np.array([1, 2])),
         r"valid must be a bool mask \(0 or 1\), got valid\[1\] = 2"),
        (lambda: metrics.box_accuracy_counts(_MAPS, _GT, _GT_VALID.astype(np.int8) * 3, [0.5]),
         r"gt_valid must be a bool mask .*gt_valid\[0, 0\] = 3"),
        (lambda: metrics.iou(np.array([[0, 0, 1, 1], [np.nan, 0, 1, 1]]), _GT[0, 0]),
         r"boxes_a must satisfy x0 <= x1 and y0 <= y1, got boxes_a\[1\] = \[nan, 0.0, 1.0, 1.0\]"),
        (ml(slot_labels=np.array([[0], [3]])),
         r"slot_labels must lie in \[0, 3\) \(M = logits.shape\[1\]\), got "
         r"slot_labels\[1, 0\] = 3"),
        (ml(box_labels=np.array([[0, -1], [5, -1]])), r"got box_labels\[1, 0\] = 5"),
        (ml(targets=_put(targets, (1, 2), 0.5)),
         r"targets must be a bool mask \(0 or 1\), got targets\[1, 2\] = 0.5"),
        (ml(slot_valid=np.array([[1], [2]])), r"slot_valid must be a bool mask .*\[1, 0\] = 2"),
        (ml(box_valid=_GT_VALID.astype(np.int32) * 2),
         r"box_valid must be a bool mask .*box_valid\[0, 0\] = 2"),
        (ml(gt_boxes=outside), r"gt_boxes\[1, 0\] = \[1, 1, 8, 4\]"),
        (ml(scoremaps=_put(ml_maps, (1, 0, 7, 7), 1.25)), r"scoremaps\[1, 0, 7, 7\] = 1.25"),
    ]


@pytest.mark.parametrize("case", range(len(_value_cases())))
def test_concrete_bad_values_name_the_first_index(case):
    call, match = _value_cases()[case]
    with pytest.raises(ValueError, match=match):
        call()


def test_padding_rows_are_not_checked():
    """Masked-out GT rows (any coordinates) and multi-label box labels of -1 are padding."""
    garbage = _put(_GT, (slice(None), 1), [9, 9, -2, 40])
    np.testing.assert_array_equal(
        metrics.max_box_accuracy(_MAPS, garbage, _GT_VALID, [0.2, 0.5])["box_acc"],
        metrics.max_box_accuracy(_MAPS, _GT, _GT_VALID, [0.2, 0.5])["box_acc"])
    counts = multilabel.multilabel_counts(
        _LOGITS, np.eye(3, dtype=np.float32)[:2], np.full((2, 1, 8, 8), 0.5, np.float32),
        np.array([[0], [1]]), np.ones((2, 1), bool), garbage, np.array([[0, -1], [1, 7]]),
        _GT_VALID)
    assert int(counts.count) == 2


def test_traced_values_keep_the_documented_behaviour():
    """Under jit values cannot be checked: an out-of-range label matches no logit (never
    correct) and maps outside [0, 1] are clipped by the box extraction."""
    labels = jnp.array([0, 3])
    logits = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    top1 = jax.jit(lambda y: metrics.topk_correct(logits, y, 1))(labels)
    chex.assert_trees_all_equal(np.asarray(top1), np.array([True, False]))
    wide = _MAPS * 4.0 - 1.0
    loc = jax.jit(lambda m: metrics.gt_known_loc_correct(m, _GT, _GT_VALID))(wide)
    chex.assert_trees_all_equal(
        np.asarray(loc), np.asarray(metrics.gt_known_loc_correct(np.clip(wide, 0, 1), _GT,
                                                                 _GT_VALID)))
