"""boxes: upsampling, normalisation and protocol-exact box extraction, checked against OpenCV.

The reference is the WSOL protocol's own box extraction (cv2.threshold + cv2.findContours with
RETR_TREE / CHAIN_APPROX_SIMPLE, max by cv2.contourArea, cv2.boundingRect, clipping). Every box
test runs on both box passes (the compiled kernel, "native", and the pure-JAX pass, "xla"). To
keep compile time low every box test runs through one batch shape ([B, 24, 32]) and one
threshold list (shape [T]), built once per module. Edge shapes and hostile maps: test_native.py.
"""
import shutil

import chex
import jax
import numpy as np
import pytest

from infocam_jax import boxes
from infocam_jax.native import ffi as native_ffi

cv2 = pytest.importorskip("cv2")

H, W = 24, 32
BACKENDS = ("native", "xla")
THRESHOLDS = np.concatenate([[0.0, 0.001, 0.5, 0.999, 1.0], np.arange(0.02, 1.0, 0.04)])


# --------------------------------------------------------------------------------------------
# Reference (the protocol, per image and threshold, with OpenCV)
# --------------------------------------------------------------------------------------------
def reference_boxes(scoremap, thresholds, multi_contour):
    """Per threshold, the list of boxes the protocol extracts (one box unless multi)."""
    height, width = scoremap.shape
    image = (scoremap * 255).astype(np.uint8)
    out = []
    for t in thresholds:
        _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            out.append([[0, 0, 0, 0]])
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        found = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            found.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(found)
    return out


def reference_iou(a, b):
    """Inclusive-pixel IoU matrix [len(a), len(b)] in float64 (the protocol's formula)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(0, x1 - x0 + 1) * np.maximum(0, y1 - y0 + 1)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


# --------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------
def _blob_maps(rng, n, noise):
    yy, xx = np.mgrid[:H, :W]
    maps = []
    for _ in range(n):
        m = np.zeros((H, W))
        for _ in range(rng.integers(1, 5)):
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            s = rng.uniform(1.0, 8.0)
            m += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        m += noise * rng.random((H, W))
        maps.append((m - m.min()) / (m.max() - m.min()))
    return np.stack(maps).astype(np.float32)


def _canvas(*rects, value=1.0):
    m = np.zeros((H, W), np.float32)
    for y0, y1, x0, x1 in rects:
        m[y0:y1, x0:x1] = value
    return m


def _hand_made():
    """Named hand-made maps in [0, 1] (binary unless stated)."""
    cases = {}
    cases["two_blobs"] = _canvas((2, 8, 2, 9), (10, 20, 15, 30))
    cases["borders"] = _canvas((0, 5, 0, 6), (18, 24, 25, 32))
    diag = np.zeros((H, W), np.float32)
    diag[5:10, 5:10] = 1
    diag[10:14, 10:14] = 1                                     # touches only at a corner
    diag[15:18, 2:5] = 1
    cases["diagonal_contact"] = diag
    ring = _canvas((3, 15, 4, 18))
    ring[5:13, 6:16] = 0
    cases["ring"] = ring
    nested = _canvas((1, 23, 1, 31))
    nested[3:21, 3:29] = 0
    nested[5:19, 5:27] = 1
    nested[7:17, 7:25] = 0
    nested[10:13, 12:15] = 1                                    # blob in the inner hole
    cases["nested_rings"] = nested
    cases["ring_vs_blob"] = np.maximum(ring, _canvas((18, 23, 20, 31)))
    single = np.zeros((H, W), np.float32)
    single[7, 11] = 1
    cases["single_pixel"] = single
    lines = np.zeros((H, W), np.float32)
    lines[2, 3:20] = 1                                           # 1-pixel-wide: area 0
    lines[5:20, 25] = 1
    lines[10, 3] = 1
    cases["lines_area_zero"] = lines
    one_hole = _canvas((8, 11, 8, 11))
    one_hole[9, 9] = 0
    cases["one_pixel_hole"] = np.maximum(one_hole, _canvas((15, 18, 20, 23)))
    cases["empty"] = np.zeros((H, W), np.float32)
    cases["full"] = np.ones((H, W), np.float32)
    steps = np.zeros((H, W), np.float32)                         # graded levels, nested sets
    steps[2:22, 2:30] = 0.3
    steps[4:12, 4:12] = 0.7
    steps[14:20, 16:28] = 0.7
    steps[6:9, 6:9] = 1.0
    cases["graded"] = steps
    return cases


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    cases = _hand_made()
    names = list(cases) + [f"blobs{i}" for i in range(16)] + [f"noisy{i}" for i in range(8)]
    maps = np.concatenate([np.stack(list(cases.values())), _blob_maps(rng, 16, 0.02),
                           _blob_maps(rng, 8, 0.5)])
    gt = rng.integers(0, 16, (len(maps), 3, 4))
    gt[..., 2:] = gt[..., :2] + rng.integers(0, 16, (len(maps), 3, 2))
    gt = np.minimum(gt, [W - 1, H - 1, W - 1, H - 1])
    gt_valid = rng.random((len(maps), 3)) < 0.6
    gt_valid[:, 0] = True
    return names, maps, gt.astype(np.int32), gt_valid


def test_kernel_is_built_where_a_compiler_exists():
    # `pip install -e .` builds it; only a machine without a C++ compiler may lack it. (Here,
    # not in test_native.py, whose module-wide fixture skips when the kernel is unavailable.)
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler")
    assert native_ffi.library_path() is not None, "the native box kernel was not built"
    assert native_ffi.available(), native_ffi.unavailable_reason()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    if request.param == "native" and not native_ffi.available():
        pytest.skip(f"native box kernel unavailable: {native_ffi.unavailable_reason()}")
    return request.param


@pytest.fixture(scope="module")
def largest(batch, backend):
    return np.asarray(boxes.largest_box(batch[1], THRESHOLDS, backend=backend))


# --------------------------------------------------------------------------------------------
# Box extraction against OpenCV
# --------------------------------------------------------------------------------------------
def test_largest_box_matches_opencv(batch, largest):
    names, maps, _, _ = batch
    chex.assert_shape(largest, (len(maps), len(THRESHOLDS), 4))
    assert largest.dtype == np.int32
    for i, name in enumerate(names):
        ref = np.array([b[0] for b in reference_boxes(maps[i], THRESHOLDS, False)])
        mismatch = np.nonzero(np.any(largest[i] != ref, axis=1))[0]
        assert mismatch.size == 0, (
            f"{name}: thresholds {THRESHOLDS[mismatch]} ours {largest[i][mismatch].tolist()} "
            f"opencv {ref[mismatch].tolist()}")


@pytest.mark.parametrize("multi_contour", [False, True])
def test_max_contour_iou_matches_opencv(batch, multi_contour, backend):
    names, maps, gt, gt_valid = batch
    ours = np.asarray(boxes.max_contour_iou(maps, THRESHOLDS, gt, gt_valid,
                                            multi_contour=multi_contour, backend=backend))
    chex.assert_shape(ours, (len(maps), len(THRESHOLDS)))
    assert ours.dtype == np.float32
    for i, name in enumerate(names):
        ref = np.array([reference_iou(b, gt[i][gt_valid[i]]).max()
                        for b in reference_boxes(maps[i], THRESHOLDS, multi_contour)])
        np.testing.assert_allclose(ours[i], ref, rtol=1e-6, atol=1e-7, err_msg=name)


def test_hand_made_expected_boxes(batch, largest):
    names = batch[0]
    at_half = {name: largest[i, list(THRESHOLDS).index(0.5)].tolist()
               for i, name in enumerate(names)}
    assert at_half["two_blobs"] == [15, 10, 30, 20]               # the bigger blob, x1 = x_max+1
    assert at_half["borders"] == [25, 18, 31, 23]                 # x1, y1 clipped to W-1, H-1
    assert at_half["diagonal_contact"] == [5, 5, 14, 14]          # 8-connected through a corner
    assert at_half["ring"] == [4, 3, 18, 15]                      # the ring's outer contour
    assert at_half["nested_rings"] == [1, 1, 31, 23]
    assert at_half["single_pixel"] == [11, 7, 12, 8]
    assert at_half["empty"] == [0, 0, 0, 0]
    assert at_half["full"] == [0, 0, 31, 23]
    # Three zero-area regions tie: the one whose first raster pixel comes last wins.
    assert at_half["lines_area_zero"] == [3, 10, 4, 11]
    # Graded map: at t = 0.999 only the top square, at t = 0 the whole plateau.
    i = names.index("graded")
    assert largest[i, list(THRESHOLDS).index(0.999)].tolist() == [6, 6, 9, 9]
    assert largest[i, 0].tolist() == [2, 2, 30, 22]


def test_hole_contours_count_in_multi_mode(batch, backend):
    # GT equal to the ring's hole-contour box: only the multi-contour mode finds it.
    names, maps, gt, gt_valid = batch
    i = names.index("ring")
    gt, gt_valid = gt.copy(), gt_valid.copy()
    gt[i] = [[5, 4, 17, 14], [4, 3, 18, 15], [0, 0, 0, 0]]
    gt_valid[i] = [True, False, False]
    multi = np.asarray(boxes.max_contour_iou(maps, THRESHOLDS, gt, gt_valid, multi_contour=True,
                                             backend=backend))
    single = np.asarray(boxes.max_contour_iou(maps, THRESHOLDS, gt, gt_valid,
                                              multi_contour=False, backend=backend))
    j = list(THRESHOLDS).index(0.5)
    assert multi[i, j] == 1.0
    assert single[i, j] < 1.0
    gt_valid[i] = [False, True, False]
    single = np.asarray(boxes.max_contour_iou(maps, THRESHOLDS, gt, gt_valid,
                                              multi_contour=False, backend=backend))
    assert single[i, j] == 1.0


def test_constant_and_nan_maps_give_empty_boxes(backend):
    maps = np.stack([np.full((H, W), 0.7, np.float32), np.full((H, W), np.nan, np.float32),
                     np.full((H, W), -np.inf, np.float32), np.zeros((H, W), np.float32)])
    maps[3, 5, 7] = np.inf                                       # finite except one pixel
    normalized = np.asarray(boxes.normalize(maps))
    np.testing.assert_array_equal(normalized, 0.0)
    # No foreground at any threshold: every box is (0, 0, 0, 0), as OpenCV finds no contour.
    got = np.asarray(boxes.largest_box(normalized, THRESHOLDS, backend=backend))
    chex.assert_shape(got, (4, len(THRESHOLDS), 4))
    np.testing.assert_array_equal(got, 0)
    for m in normalized:
        np.testing.assert_array_equal(reference_boxes(m, THRESHOLDS, False), 0)


def test_largest_box_under_jit(batch, largest, backend):
    maps = batch[1]
    jitted = jax.jit(lambda s: boxes.largest_box(s, THRESHOLDS, backend=backend))
    np.testing.assert_array_equal(np.asarray(jitted(maps)), largest)


# --------------------------------------------------------------------------------------------
# Upsampling and normalisation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,flag", [("bicubic", "INTER_CUBIC"), ("bilinear", "INTER_LINEAR")])
@pytest.mark.parametrize("src,dst", [((7, 7), (224, 224)), ((5, 9), (23, 40)), ((14, 14), (14, 14)),
                                     ((1, 3), (4, 5))])
def test_upsample_matches_cv2_resize(method, flag, src, dst):
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(2,) + src).astype(np.float32)
    ours = np.asarray(boxes.upsample(maps, dst, method))
    chex.assert_shape(ours, (2,) + dst)
    ref = np.stack([cv2.resize(m, (dst[1], dst[0]), interpolation=getattr(cv2, flag))
                    for m in maps])
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_normalize_matches_protocol():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(4, 6, 5)).astype(np.float32)
    maps[1] = 3.0
    maps[2, 0, 0] = np.nan
    maps[3, 1, 1] = np.inf
    ours = np.asarray(boxes.normalize(maps))
    expected = maps.copy()
    for m in expected:                                          # the protocol's normalize_scoremap
        if not np.isfinite(m).all() or m.min() == m.max():
            m[...] = 0
        else:
            m -= m.min()
            m /= m.max()
    np.testing.assert_array_equal(ours, expected)
    assert ours[0].min() == 0.0 and ours[0].max() == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_max_normalize_matches_formula(seed):
    # "max": max(m, 0) / max(m) per map, in float64 NumPy; no positive value -> zeros.
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(4, 9, 11)).astype(np.float32)
    maps[1] = -np.abs(maps[1])             # no positive value
    maps[2] = maps[2] * 1e3 - 5.0          # signed, large
    got = np.asarray(boxes.normalize(maps, mode="max"))
    expected = np.zeros_like(maps, np.float64)
    for i, m in enumerate(maps.astype(np.float64)):
        if m.max() > 0:
            expected[i] = np.maximum(m, 0) / m.max()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got[1].max() == 0.0
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_max_normalize_non_finite_and_zero_maps():
    maps = np.ones((4, 3, 3), np.float32)
    maps[0, 1, 1] = np.nan
    maps[1, 0, 0] = np.inf
    maps[2] = 0.0
    maps[3, 2, 2] = -np.inf
    for mode in boxes.NORMALIZE_MODES:
        np.testing.assert_array_equal(np.asarray(boxes.normalize(maps, mode=mode)), 0.0)


def test_scoremaps_max_reads_upsampled_map():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(2, 5, 6)).astype(np.float32)
    up = np.asarray(boxes.upsample(maps, (20, 24)), np.float64)
    expected = np.maximum(up, 0) / up.max(axis=(1, 2), keepdims=True)
    got = np.asarray(boxes.scoremaps(maps, (20, 24), normalize="max"))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="normalize mode"):
        boxes.scoremaps(maps, (20, 24), normalize="relu")
    with pytest.raises(ValueError, match="normalize mode"):
        boxes.normalize(maps, mode="minmax2")


@pytest.mark.parametrize("method,flag", [("bicubic", "INTER_CUBIC"), ("bilinear", "INTER_LINEAR")])
def test_scoremaps_matches_cv2_resize_then_minmax(method, flag):
    # Built independently: cv2.resize, then the protocol's min-max in float64 NumPy.
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(3, 7, 7)).astype(np.float32)
    maps[2] = 0.0                                                # constant -> zeros
    expected = []
    for m in maps:
        up = cv2.resize(m, (30, 20), interpolation=getattr(cv2, flag)).astype(np.float64)
        span = up.max() - up.min()
        expected.append((up - up.min()) / span if span > 0 else np.zeros_like(up))
    got = np.asarray(boxes.scoremaps(maps, (20, 30), method))
    chex.assert_shape(got, (3, 20, 30))
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[2], 0.0)


def test_level_table_is_numpy_float64():
    table = boxes.level_table(THRESHOLDS)
    chex.assert_shape(table, (len(THRESHOLDS), 256))
    for i, t in enumerate(THRESHOLDS):
        for m in (0, 1, 7, 100, 254, 255):
            assert table[i, m] == int(t * np.uint8(m))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    good = np.zeros((1, H, W), np.float32)
    gt = np.zeros((1, 1, 4), np.int32)
    ok = np.ones((1, 1), bool)
    with pytest.raises(ValueError, match=r"scoremaps must have shape \[B, H, W\]"):
        boxes.largest_box(good[0], THRESHOLDS)
    with pytest.raises(ValueError, match=r"thresholds must lie in \[0, 1\]"):
        boxes.largest_box(good, [0.5, 1.5])
    with pytest.raises(ValueError, match="thresholds must be a non-empty 1-D"):
        boxes.largest_box(good, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"scoremaps must lie in \[0, 1\]"):
        boxes.largest_box(good + 2.0, THRESHOLDS)
    with pytest.raises(ValueError, match=r"scoremaps must lie in \[0, 1\]"):
        boxes.largest_box(good * np.nan, THRESHOLDS)
    with pytest.raises(ValueError, match=r"gt_boxes must satisfy x0 <= x1"):
        boxes.max_contour_iou(good, THRESHOLDS, np.array([[[5, 0, 2, 3]]]), ok)
    with pytest.raises(ValueError, match=r"gt_boxes must have shape \[B, G, 4\]"):
        boxes.max_contour_iou(good, THRESHOLDS, gt[0], ok)
    with pytest.raises(ValueError, match=r"gt_valid must have shape \[B, G\]"):
        boxes.max_contour_iou(good, THRESHOLDS, gt, ok[0])
    with pytest.raises(ValueError, match="method must be one of"):
        boxes.upsample(good, (4, 4), "nearest")
    with pytest.raises(ValueError, match=r"maps must have shape \[B, H, W\]"):
        boxes.upsample(good[0], (4, 4))
    with pytest.raises(ValueError, match="thresholds must be concrete"):
        jax.jit(lambda t: boxes.largest_box(good, t))(np.array([0.5]))


# --------------------------------------------------------------------------------------------
# Value checks on concrete inputs (first offending index and value named); traced: clipped
# --------------------------------------------------------------------------------------------
def _put(array, index, value):
    out = np.array(array, copy=True)
    out[index] = value
    return out


_MAPS = np.full((2, H, W), 0.5, np.float32)
_GT = np.array([[[2, 3, 10, 12], [0, 0, 0, 0]], [[4, 1, 20, 9], [0, 0, 0, 0]]], np.int32)
_GT_VALID = np.array([[True, False], [True, False]])


@pytest.mark.parametrize("maps, gt, gt_valid, match", [
    (_put(_MAPS, (1, 3, 5), np.nan), _GT, _GT_VALID,
     r"scoremaps must lie in \[0, 1\] and be finite .*got scoremaps\[1, 3, 5\] = nan"),
    (_put(_MAPS, (0, 23, 31), 1.5), _GT, _GT_VALID, r"got scoremaps\[0, 23, 31\] = 1.5"),
    (_put(_MAPS, (1, 0, 0), -np.inf), _GT, _GT_VALID, r"got scoremaps\[1, 0, 0\] = -inf"),
    (_put(_MAPS.astype(np.float64), (0, 2, 2), 1 + 1e-12), _GT, _GT_VALID,
     r"got scoremaps\[0, 2, 2\] = 1.000000000001"),
    (_MAPS, _put(_GT, (1, 0), [20, 1, 4, 9]), _GT_VALID,
     r"gt_boxes must satisfy x0 <= x1 and y0 <= y1, got gt_boxes\[1, 0\] = \[20, 1, 4, 9\]"),
    (_MAPS, _put(_GT, (0, 0), [2, 12, 10, 3]), _GT_VALID, r"gt_boxes\[0, 0\] = \[2, 12, 10, 3\]"),
    (_MAPS, _put(_GT, (1, 0), [4, 1, W, 9]), _GT_VALID,
     r"gt_boxes must satisfy 0 <= x0 <= x1 < W = 32 and 0 <= y0 <= y1 < H = 24 \(inside the "
     r"24 x 32 image\), got gt_boxes\[1, 0\] = \[4, 1, 32, 9\]"),
    (_MAPS, _put(_GT, (0, 0), [2, -1, 10, 12]), _GT_VALID, r"gt_boxes\[0, 0\] = \[2, -1, 10, 12\]"),
    (_MAPS, _put(_GT, (0, 0), [2, 3, 10, H]), _GT_VALID, r"H = 24 .*\[2, 3, 10, 24\]"),
    (_MAPS, _GT, _put(_GT_VALID.astype(np.int32), (1, 1), 2),
     r"gt_valid must be a bool mask \(0 or 1\), got gt_valid\[1, 1\] = 2"),
])
@pytest.mark.parametrize("multi_contour", [False, True])
def test_concrete_bad_values_name_the_first_index(backend, maps, gt, gt_valid, match,
                                                  multi_contour):
    with pytest.raises(ValueError, match=match):
        boxes.max_contour_iou(maps, [0.2, 0.5], gt, gt_valid, multi_contour, backend=backend)
    if gt is _GT and gt_valid is _GT_VALID:  # a map error: largest_box names it too
        with pytest.raises(ValueError, match=match):
            boxes.largest_box(maps, [0.2, 0.5], backend=backend)


def test_padding_gt_rows_are_not_checked(backend):
    """Rows with gt_valid False are padding: any coordinates (the pipeline writes zeros, or
    keeps a box the crop removed) and they never score."""
    garbage = _put(_GT, (slice(None), 1), [40, 30, -3, -7])
    got = boxes.max_contour_iou(_MAPS, [0.2, 0.5], garbage, _GT_VALID, True, backend=backend)
    want = boxes.max_contour_iou(_MAPS, [0.2, 0.5], _GT, _GT_VALID, True, backend=backend)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_traced_maps_are_clipped_not_checked(batch, backend):
    """The documented traced behaviour: under jit values outside [0, 1] cannot be checked and
    are clipped by the uint8 quantisation (concrete inputs raise, see above)."""
    _, maps, gt, gt_valid = batch
    wide = (maps * 3.0 - 1.0).astype(np.float32)                  # values in [-1, 2]
    clipped = np.clip(wide, 0.0, 1.0)
    jitted = jax.jit(lambda s: boxes.largest_box(s, THRESHOLDS, backend=backend))
    np.testing.assert_array_equal(np.asarray(jitted(wide)),
                                  np.asarray(boxes.largest_box(clipped, THRESHOLDS,
                                                               backend=backend)))
    iou = jax.jit(lambda s: boxes.max_contour_iou(s, THRESHOLDS, gt, gt_valid, True,
                                                  backend=backend))
    chex.assert_trees_all_equal(np.asarray(iou(wide)), np.asarray(
        boxes.max_contour_iou(clipped, THRESHOLDS, gt, gt_valid, True, backend=backend)))
