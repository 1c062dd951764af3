"""The eval step against an independent NumPy + OpenCV statement of the whole protocol.

Nothing of ``infocam_jax`` enters the expected numbers: maps come from the features and the
classifier kernel by the paper's formulas written in NumPy (CAM eq. 1; infoCAM: the region sum
of ``(w^y - mean_{y' != y} w^{y'}) · g``; infoCAM+: the same with the rival ``argmin logits``;
multi-label infoCAM: the region-summed CAM), upsampled by ``cv2.resize(INTER_CUBIC)``, min-max
normalised (single-label also ``max(m, 0) / max(m)``, ``EvalSettings.normalize="max"``),
quantised to uint8 and boxed by ``cv2.findContours(RETR_TREE)`` + ``contourArea`` +
``boundingRect`` as the WSOL protocol does (Choe et al., CVPR 2020: the largest contour is the
first of Python's ``max``, ``x1 = min(x + w, W - 1)``), IoU and counts by hand. The model is a
stub whose ``apply`` returns the hand-made (logits, features) packed into the "image", so one
small compile per setting is all the JAX work.

The hand-made batch is chosen so that a wrong wiring shows: M = 7 > top_k = 5 with labels at
every rank (some outside the top 5, one the argmin itself, which makes its infoCAM+ map zero),
the logits' argmin differs from that of GAP(g)·W (a rival taken from the features instead of the
logits changes infoCAM+), a non-square feature grid and image (a swapped axis changes boxes),
an even region size R = 4 (the "same" padding's asymmetric side), two GT slots, padded
examples that must count zero times, and per-digit multi-label counts that differ between
digits, one digit never present (NaN).
"""
import dataclasses

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import devices
from infocam_jax.evaluation import step
from infocam_jax.evaluation.settings import EvalSettings

FEAT = (6, 8)           # feature grid h, w (non-square)
IMAGE = (18, 24)        # image H, W the maps are upsampled to
K = 4                   # feature channels
TOP_K = 5
NUM_THRESHOLDS = 20     # MaxBoxAcc grid np.arange(0, 1, 1/20)
V2_IOUS = (0.3, 0.5, 0.7)


# ----------------------------------------------------------------------------- stub model

@dataclasses.dataclass(frozen=True)
class PackedModel:
    """``image [B, h, w, K + M]``: features are the first K channels, logits ``image[:, 0, 0, K:]``.

    Hashable (the eval step is compiled once per (settings, model, kernel_fn))."""
    k: int

    def apply(self, variables, images, train=False):
        del variables, train
        return images[:, 0, 0, self.k:], images[..., :self.k]


def kernel_fn(variables):
    return variables["kernel"]


def pack(features, logits):
    """features ``[B, h, w, K]``, logits ``[B, M]`` -> the stub's image ``[B, h, w, K + M]``."""
    b, h, w, _ = features.shape
    tiled = np.broadcast_to(logits[:, None, None, :], (b, h, w, logits.shape[1]))
    return np.concatenate([features, tiled], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- NumPy reference

def region_sum_same(m, r):
    """Sum over the R x R square whose top-left corner is (i - (R-1)//2, j - (R-1)//2)."""
    lo = (r - 1) // 2
    padded = np.pad(m, ((lo, r - 1 - lo), (lo, r - 1 - lo)))
    h, w = m.shape
    return sum(padded[a:a + h, c:c + w] for a in range(r) for c in range(r))


def ref_map(kind, g, kernel, label, logits, r, rival_from="logits"):
    """One map at feature resolution, float64 ``[h, w]``; g ``[h, w, K]``, kernel ``[K, M]``.

    ``rival_from="gap"`` takes infoCAM+'s rival from GAP(g)·W instead of the logits: only
    to show that the test data tells the two apart."""
    g = g.astype(np.float64)
    kernel = kernel.astype(np.float64)
    w_y = kernel[:, label]
    if kind == "cam":
        return g @ w_y
    if kind == "infocam":
        others = np.delete(kernel, label, axis=1).mean(axis=1)
        return region_sum_same(g @ (w_y - others), r)
    if kind == "infocam_plus":
        scores = logits if rival_from == "logits" else g.mean(axis=(0, 1)) @ kernel
        rival = int(np.argmin(scores))
        return region_sum_same(g @ (w_y - kernel[:, rival]), r)
    if kind == "ml_infocam":
        return region_sum_same(g @ w_y, r)
    raise AssertionError(kind)


def ref_scoremap(m, normalize="minmax"):
    """cv2.resize (bicubic) to the image size, then to [0, 1]: min-max (the protocol; constant
    -> zeros) or ``max(m, 0) / max(m)`` (the paper's reading; no positive value -> zeros)."""
    up = cv2.resize(m.astype(np.float32), (IMAGE[1], IMAGE[0]), interpolation=cv2.INTER_CUBIC)
    lo, hi = up.min(), up.max()
    if normalize == "max":
        return np.zeros_like(up) if hi <= 0 else np.maximum(up, 0) / hi
    return np.zeros_like(up) if hi == lo else (up - lo) / (hi - lo)


def ref_boxes(scoremap, t, every_contour):
    """The protocol's boxes at threshold t: the largest contour's, or every contour's."""
    q = (scoremap * 255).astype(np.uint8)
    _, binary = cv2.threshold(q, int(t * np.max(q)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        return [(0, 0, 0, 0)]
    if not every_contour:
        contours = [max(contours, key=cv2.contourArea)]
    height, width = scoremap.shape
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        out.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
    return out


def ref_iou(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]) + 1, 0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]) + 1, 0)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def best_iou(scoremap, t, gts, every_contour=False):
    """Max IoU over the protocol's box(es) at t and the given GT boxes (0 without GT)."""
    return max([ref_iou(p, g) for p in ref_boxes(scoremap, t, every_contour) for g in gts],
               default=0.0)


def ref_single_label(batch, kernel, kinds, r, rival_from="logits", normalize="minmax"):
    valid = np.flatnonzero(batch["valid"])
    grid = np.arange(0, 1, 1 / NUM_THRESHOLDS)
    logits, g = batch["image"][:, 0, 0, K:], batch["image"][..., :K]
    order = np.argsort(-logits, axis=1, kind="stable")
    top1 = np.array([order[i, 0] == batch["label"][i] for i in valid])
    topk = np.array([batch["label"][i] in order[i, :TOP_K] for i in valid])
    res = {"num_images": float(len(valid)), "top1_cls": top1.mean(), "top5_cls": topk.mean(),
           "accuracy": top1.mean()}
    for kind in kinds:
        known, box_hits, v2_hits = [], [], []
        for i in valid:
            gts = [tuple(b) for b, ok in zip(batch["boxes"][i], batch["box_valid"][i]) if ok]
            sm = ref_scoremap(ref_map(kind, g[i], kernel, batch["label"][i], logits[i], r,
                                      rival_from), normalize)
            known.append(best_iou(sm, 0.2, gts) >= 0.5)
            box_hits.append([best_iou(sm, t, gts) >= 0.5 for t in grid])
            ious = [best_iou(sm, t, gts, every_contour=True) for t in grid]
            v2_hits.append([[v >= d for v in ious] for d in V2_IOUS])
        known = np.array(known)
        box_acc = np.mean(box_hits, axis=0)                    # [T]
        v2_acc = np.mean(v2_hits, axis=0).max(axis=1)          # [3]
        res[f"{kind}/gt_known_loc"] = known.mean()
        res[f"{kind}/top1_loc"] = (known & top1).mean()
        res[f"{kind}/max_box_acc"] = box_acc.max()
        res[f"{kind}/max_box_acc_threshold"] = grid[np.argmax(box_acc)]
        for d, v in zip(V2_IOUS, v2_acc):
            res[f"{kind}/max_box_acc_v2_iou{round(100 * d)}"] = v
        res[f"{kind}/max_box_acc_v2"] = v2_acc.mean()
    return res


def ref_multi_label(batch, kernel, r, num_classes):
    valid = np.flatnonzero(batch["valid"])
    logits, g = batch["image"][:, 0, 0, K:], batch["image"][..., :K]
    targets = batch["labels"][valid] > 0.5
    right = (logits[valid] > 0) == targets                     # [N, M]
    res = {"num_images": float(len(valid)), "exact_match": right.all(axis=1).mean()}
    for c in range(num_classes):
        res[f"digit_acc/{c}"] = right[:, c].mean()
    res["cls_acc"] = res["accuracy"] = right.mean(axis=0).mean()
    for kind, map_kind in (("cam", "cam"), ("infocam", "ml_infocam")):
        hits = {c: [] for c in range(num_classes)}
        for i in valid:
            for c in np.flatnonzero(batch["labels"][i] > 0.5):
                gts = [tuple(b) for b, lab, ok in zip(batch["boxes"][i], batch["box_labels"][i],
                                                      batch["box_valid"][i]) if ok and lab == c]
                sm = ref_scoremap(ref_map(map_kind, g[i], kernel, c, None, r))
                hits[c].append(best_iou(sm, 0.2, gts) >= 0.5)
        everything = [h for c in hits for h in hits[c]]
        res[f"{kind}/loc_acc"] = np.mean(everything)
        for c in range(num_classes):
            res[f"{kind}/loc_acc/{c}"] = np.mean(hits[c]) if hits[c] else np.nan
    return res


# ----------------------------------------------------------------------------- hand-made data

def blob_features(rng, n):
    """``[n, h, w, K]``: each channel a few Gaussian blobs of either sign, plus weak noise."""
    yy, xx = np.mgrid[:FEAT[0], :FEAT[1]]
    out = np.zeros((n, *FEAT, K))
    for i in range(n):
        for k in range(K):
            for _ in range(2):
                cy, cx = rng.uniform(0, FEAT[0]), rng.uniform(0, FEAT[1])
                s = rng.uniform(0.7, 1.8)
                out[i, :, :, k] += rng.uniform(-1, 2) * np.exp(
                    -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return (out + 0.05 * rng.normal(size=out.shape)).astype(np.float32)


def logits_with_rank(rng, label, rank, m):
    """Distinct logits in which ``label`` is the ``rank``-th largest (0 = top-1)."""
    values = np.sort(rng.choice(np.arange(-30, 30), m, replace=False))[::-1] / 4.0
    others = rng.permutation([c for c in range(m) if c != label])
    order = np.insert(others, rank, label)
    out = np.empty(m)
    out[order] = values
    return out


def gt_box(rng, scoremap):
    """Mostly the CAM's own box at 0.2, 0.5 or 0.7, jittered by up to 2 pixels a side."""
    height, width = IMAGE
    if rng.uniform() < 0.7:
        t = rng.choice([0.2, 0.2, 0.5, 0.7])
        box = np.array(ref_boxes(scoremap, t, False)[0]) + rng.integers(-2, 3, 4)
    else:
        x0, y0 = rng.integers(0, width - 4), rng.integers(0, height - 4)
        box = np.array([x0, y0, x0 + rng.integers(3, 12), y0 + rng.integers(3, 9)])
    box = np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])
    return [box[0], box[1], max(box[0], box[2]), max(box[1], box[3])]


def single_label_case(seed=10):
    m, n, pad = 7, 10, 2
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(K, m)).astype(np.float32)
    features = blob_features(rng, n + pad)
    ranks = [0, 0, 1, 2, 4, 5, 6, 0, 3, 0, 0, 0]           # 6 = the argmin: zero infoCAM+
    labels = rng.integers(0, m, n + pad).astype(np.int32)
    logits = np.stack([logits_with_rank(rng, labels[i], ranks[i], m) for i in range(n + pad)])
    boxes = np.zeros((n + pad, 2, 4), np.int32)
    for i in range(n + pad):
        # GT from the CAM for even images, from infoCAM+ (R = 4, logits' rival) for odd ones.
        kind = ("cam", "infocam_plus")[i % 2]
        sm = ref_scoremap(ref_map(kind, features[i], kernel, labels[i], logits[i], 4))
        boxes[i] = [gt_box(rng, sm), gt_box(rng, sm)]
    batch = {"image": pack(features, logits), "label": labels, "boxes": boxes,
             "box_valid": np.stack([np.ones(n + pad, bool), rng.uniform(size=n + pad) < 0.4], -1),
             "valid": np.arange(n + pad) < n}
    return batch, kernel


def multi_label_case(seed=7):
    """M = 5 digits, G = 2 slots; digit 4 never present; digits present in different numbers."""
    m, n, pad = 5, 10, 1
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(K, m)).astype(np.float32)
    features = blob_features(rng, n + pad)
    present = [(0, 1), (0, 2), (0,), (1, 3), (0, 3), (2,), (0, 1), (3,), (0, 2), (1,), (0, 1)]
    targets = np.zeros((n + pad, m), np.float32)
    boxes = np.zeros((n + pad, 2, 4), np.int32)
    box_labels = np.zeros((n + pad, 2), np.int32)
    box_valid = np.zeros((n + pad, 2), bool)
    for i, digits in enumerate(present):
        targets[i, list(digits)] = 1
        for s, c in enumerate(digits):
            sm = ref_scoremap(ref_map("cam", features[i], kernel, c, None, 1))
            boxes[i, s], box_labels[i, s], box_valid[i, s] = gt_box(rng, sm), c, True
    # Logits: mostly the right sign, some wrong, so per-digit accuracies differ.
    logits = np.where(targets > 0, 1.0, -1.0) * rng.uniform(0.5, 2, (n + pad, m))
    flip = (rng.uniform(size=(n + pad, m)) < 0.25) & (np.arange(n + pad) < n)[:, None]
    logits = np.where(flip, -logits, logits)
    batch = {"image": pack(features, logits), "label": targets.argmax(1).astype(np.int32),
             "labels": targets, "boxes": boxes, "box_labels": box_labels,
             "box_valid": box_valid, "valid": np.arange(n + pad) < n}
    return batch, kernel


# ----------------------------------------------------------------------------- the eval step

def run_eval_step(settings, batch, kernel):
    """make_eval_step on one device -> summed counters -> finalize."""
    p_step = step.make_eval_step(settings, PackedModel(K), num_devices=1, kernel_fn=kernel_fn)
    variables = devices.replicate({"kernel": kernel}, 1)
    counts = devices.replicate(step.init_counts(settings), 1)
    counts = p_step(variables, {k: jnp.asarray(v)[None] for k, v in batch.items()}, counts)
    summed = jax.tree_util.tree_map(lambda x: np.asarray(x).sum(0), counts)
    return step.finalize(settings, summed)


def assert_results_equal(got, expected):
    assert set(got) == set(expected), set(got) ^ set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=0, equal_nan=True,
                                   err_msg=key)


@pytest.mark.parametrize("normalize", ["minmax", "max"])
def test_single_label_matches_numpy_opencv_protocol(normalize):
    batch, kernel = single_label_case()
    kinds = ("cam", "infocam", "infocam_plus")
    settings = EvalSettings(image_size=IMAGE, region_size=4, num_classes=7, top_k=TOP_K,
                            num_box_thresholds=NUM_THRESHOLDS, map_kinds=kinds,
                            normalize=normalize)
    expected = ref_single_label(batch, kernel, kinds, r=4, normalize=normalize)
    # The case is informative: classification and localisation are neither all right nor all
    # wrong, top-5 differs from top-1 and from 1, and the three maps disagree.
    assert 0 < expected["top1_cls"] < expected["top5_cls"] < 1
    for kind in kinds:
        assert 0 < expected[f"{kind}/gt_known_loc"] < 1, kind
        assert 0 < expected[f"{kind}/max_box_acc_v2"] < 1, kind
    for metric in ("gt_known_loc", "max_box_acc", "max_box_acc_threshold"):
        assert len({expected[f"{k}/{metric}"] for k in kinds}) > 1, metric
    gap_rival = ref_single_label(batch, kernel, ("infocam_plus",), r=4, rival_from="gap",
                                 normalize=normalize)
    assert any(gap_rival[k] != expected[k] for k in gap_rival), "rival from logits not exercised"
    assert_results_equal(run_eval_step(settings, batch, kernel), expected)


def test_multi_label_matches_numpy_opencv_protocol():
    batch, kernel = multi_label_case()
    settings = EvalSettings(image_size=IMAGE, region_size=3, num_classes=5,
                            multi_label=True, map_kinds=("cam", "infocam"))
    expected = ref_multi_label(batch, kernel, r=3, num_classes=5)
    per_digit = [expected[f"digit_acc/{c}"] for c in range(5)]
    assert len(set(per_digit)) > 2 and 0 < expected["exact_match"] < 1
    for kind in ("cam", "infocam"):
        assert np.isnan(expected[f"{kind}/loc_acc/4"])
        loc = [expected[f"{kind}/loc_acc/{c}"] for c in range(4)]
        assert len(set(loc)) > 2 and 0 < expected[f"{kind}/loc_acc"] < 1, (kind, loc)
    assert expected["cam/loc_acc/1"] != expected["infocam/loc_acc/1"]
    assert_results_equal(run_eval_step(settings, batch, kernel), expected)
