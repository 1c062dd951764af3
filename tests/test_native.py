"""The compiled box kernel (backend="native"): hostile maps against OpenCV and the pure-JAX pass,
jit / vmap / pmap, the host-callback path, the eager host path (float32 maps quantised and
range-checked in the kernel), and the fallback when the library is missing.

The main random and hand-made suites run on both backends in test_boxes.py.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import numpy as np
import pytest
from test_boxes import reference_boxes, reference_iou

from infocam_jax.native import ffi
from infocam_jax import boxes

cv2 = pytest.importorskip("cv2")
ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = np.array([0.0, 0.001, 0.2, 0.5, 0.75, 0.999, 1.0])


@pytest.fixture(scope="module", autouse=True)
def native():
    if not ffi.available():
        pytest.skip(f"native box kernel unavailable: {ffi.unavailable_reason()}")


# --------------------------------------------------------------------------------------------
# Hostile maps
# --------------------------------------------------------------------------------------------
def _checkerboard(h, w, period=1):
    yy, xx = np.mgrid[:h, :w]
    return (((yy // period) + (xx // period)) % 2).astype(np.float32)


def _hostile_maps(h, w, seed=0):
    """[K, h, w] maps in [0, 1] that stress contours and quantisation."""
    rng = np.random.default_rng(seed)
    maps = [
        _checkerboard(h, w), 1.0 - _checkerboard(h, w), _checkerboard(h, w, 2),
        np.ones((h, w)), np.zeros((h, w)), np.full((h, w), 0.5),
        rng.random((h, w)),                                         # pure noise: many components
        rng.choice([0.0, 1.0 / 255, 2.0 / 255, 0.99999994, 1.0], (h, w)),   # quantisation edges
        rng.choice([0.0, 1e-38, 1.0], (h, w)),                      # denormal-scale values
        np.where(rng.random((h, w)) < 0.5, 1.0, rng.random((h, w)) * 0.1),
    ]
    return np.stack(maps).astype(np.float32)


def _gt(num, h, w, seed=0):
    rng = np.random.default_rng(seed)
    x0, x1 = np.sort(rng.integers(0, w, (2, num, 2)), axis=0)
    y0, y1 = np.sort(rng.integers(0, h, (2, num, 2)), axis=0)
    gt = np.stack([x0, y0, x1, y1], axis=-1).astype(np.int32)
    valid = np.ones((num, 2), bool)
    valid[::2, 1] = False
    return gt, valid


def _opencv_largest(maps, thresholds):
    return np.stack([[b[0] for b in reference_boxes(m, thresholds, False)] for m in maps])


def _opencv_v2(maps, thresholds, gt, valid):
    return np.stack([[reference_iou(b, gt[i][valid[i]]).max()
                      for b in reference_boxes(m, thresholds, True)]
                     for i, m in enumerate(maps)])


def _assert_native_matches_opencv(maps, thresholds, gt, valid):
    """Largest boxes equal OpenCV's; best contour IoUs (MaxBoxAccV2) equal within 1e-6."""
    ours = np.asarray(boxes.largest_box(maps, thresholds, backend="native"))
    np.testing.assert_array_equal(ours, _opencv_largest(maps, thresholds))
    ours = np.asarray(boxes.max_contour_iou(maps, thresholds, gt, valid, multi_contour=True,
                                            backend="native"))
    np.testing.assert_allclose(ours, _opencv_v2(maps, thresholds, gt, valid), rtol=1e-6,
                               atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 23), (23, 1), (2, 2), (3, 40),
                                   (17, 5), (31, 29), (64, 48)])
def test_hostile_maps_match_opencv(shape):
    maps = _hostile_maps(*shape)
    gt, valid = _gt(len(maps), *shape)
    _assert_native_matches_opencv(maps, THRESHOLDS, gt, valid)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (12, 13)])
def test_hostile_maps_native_equals_xla(shape):
    maps = _hostile_maps(*shape, seed=1)
    gt, valid = _gt(len(maps), *shape, seed=1)
    for multi in (False, True):
        got = {b: np.asarray(boxes.max_contour_iou(maps, THRESHOLDS, gt, valid, multi, backend=b))
               for b in ("native", "xla")}
        np.testing.assert_array_equal(got["native"], got["xla"], err_msg=f"multi={multi}")


def test_large_maps_match_opencv():
    # 1024 x 1024: a checkerboard of 16-pixel squares and smooth blobs + noise. (The 1-pixel
    # checkerboard runs at 64 x 48 above; OpenCV's reference takes minutes on it at 1024.)
    size = 1024
    yy, xx = np.mgrid[:size, :size] / size
    rng = np.random.default_rng(2)
    blobs = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
                for cy, cx, s in rng.uniform([0, 0, 0.02], [1, 1, 0.2], (4, 3)))
    blobs = blobs + 0.05 * rng.random((size, size))
    blobs = (blobs - blobs.min()) / (blobs.max() - blobs.min())
    maps = np.stack([_checkerboard(size, size, 16), blobs]).astype(np.float32)
    thresholds = np.array([0.0, 0.3, 0.6])
    gt, valid = _gt(2, size, size, seed=2)
    _assert_native_matches_opencv(maps, thresholds, gt, valid)


# --------------------------------------------------------------------------------------------
# Transformations and call paths
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_batch():
    maps = _hostile_maps(10, 14, seed=3)[:8]
    gt, valid = _gt(len(maps), 10, 14, seed=3)
    return maps, gt, valid


def test_vmap_matches_flat_batch(small_batch):
    maps, gt, valid = small_batch

    def both(s, g, v):
        return (boxes.largest_box(s, THRESHOLDS, backend="native"),
                boxes.max_contour_iou(s, THRESHOLDS, g, v, multi_contour=True, backend="native"))

    flat = both(maps, gt, valid)
    split = jax.vmap(both)(maps.reshape(2, 4, 10, 14), gt.reshape(2, 4, 2, 4),
                           valid.reshape(2, 4, 2))
    chex.assert_shape(split, ((2, 4, len(THRESHOLDS), 4), (2, 4, len(THRESHOLDS))))
    for a, b in zip(flat, split):
        np.testing.assert_array_equal(np.asarray(b).reshape(np.shape(a)), np.asarray(a))
    # vmap over the GT only (maps unbatched): broadcast_all repeats the maps.
    over_gt = jax.vmap(lambda g: boxes.max_contour_iou(maps, THRESHOLDS, g, valid, True,
                                                       backend="native"))(np.stack([gt, gt]))
    np.testing.assert_array_equal(np.asarray(over_gt[1]), np.asarray(flat[1]))


def test_host_callback_path_equals_ffi(small_batch):
    # The path used off the CPU platform (pure_callback to the same kernel), run here on CPU.
    maps, gt, valid = small_batch
    q = (maps * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(ffi.largest_boxes(q, ffi=False)),
                                  np.asarray(ffi.largest_boxes(q, ffi=True)))
    via_callback = jax.jit(jax.vmap(lambda a, b, c: ffi.contour_iou(a, b, c, ffi=False)))(
        q.reshape(2, 4, 10, 14), gt.reshape(2, 4, 2, 4), valid.reshape(2, 4, 2))
    np.testing.assert_array_equal(np.asarray(via_callback).reshape(8, -1),
                                  np.asarray(ffi.contour_iou(q, gt, valid, ffi=True)))


def _run_python(code, **env):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_pmap_over_two_host_devices():
    result = _run_python("""
        import jax, numpy as np
        from infocam_jax import boxes, metrics
        assert jax.local_device_count() == 2, jax.devices()
        rng = np.random.default_rng(0)
        maps = rng.random((2, 3, 9, 11)).astype(np.float32)
        gt = np.tile(np.array([[[1, 1, 6, 5]]], np.int32), (2, 3, 1, 1))
        valid = np.ones((2, 3, 1), bool)
        th = np.arange(100) / 100
        f = jax.pmap(lambda s, g, v: (boxes.largest_box(s, th, backend="native"),
                                      boxes.max_contour_iou(s, th, g, v, True, backend="native")))
        got = f(maps, gt, valid)
        for i in range(2):
            want = (boxes.largest_box(maps[i], th, backend="xla"),
                    boxes.max_contour_iou(maps[i], th, gt[i], valid[i], True, backend="xla"))
            for a, b in zip(got, want):
                np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(b))
        print("ok")
    """, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    assert result.stdout.strip().endswith("ok")


def test_fallback_without_library_warns_once():
    result = _run_python("""
        import warnings, numpy as np
        from infocam_jax import boxes
        maps = np.zeros((1, 4, 4), np.float32)
        maps[0, 1:3, 1:3] = 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert boxes.resolve_backend("auto") == "xla"
            got = boxes.largest_box(maps, [0.5])
            boxes.largest_box(maps, [0.5])
        assert np.asarray(got).tolist() == [[[1, 1, 3, 3]]], got
        native = [w for w in caught if "native box kernel" in str(w.message)]
        assert len(native) == 1, [str(w.message) for w in caught]
        try:
            boxes.largest_box(maps, [0.5], backend="native")
        except RuntimeError as err:
            assert "INFOCAM_DISABLE_NATIVE" in str(err), err
        else:
            raise AssertionError("backend='native' did not raise")
        print("ok")
    """, INFOCAM_DISABLE_NATIVE="1", JAX_PLATFORMS="cpu")
    assert result.stdout.strip().endswith("ok")


def test_resolve_backend():
    assert boxes.resolve_backend("xla") == "xla"
    assert boxes.resolve_backend("native") == "native"
    expected = "native" if jax.default_backend() == "cpu" else "xla"
    assert boxes.resolve_backend("auto") == expected
    with pytest.raises(ValueError, match="backend must be one of"):
        boxes.resolve_backend("opencv")
    with pytest.raises(ValueError, match="backend must be one of"):
        boxes.largest_box(np.zeros((1, 3, 3), np.float32), [0.5], backend="gpu")


def test_metrics_accept_backend(small_batch):
    from infocam_jax import metrics
    maps, gt, valid = small_batch
    assert len(metrics.DEFAULT_THRESHOLDS) == 1000
    np.testing.assert_array_equal(metrics.DEFAULT_THRESHOLDS, np.arange(0, 1, 0.001))
    got = {b: metrics.max_box_accuracy_v2(maps, gt, valid, backend=b) for b in ("native", "xla")}
    for key in ("box_acc", "max_box_acc", "best_threshold", "max_box_acc_v2"):
        np.testing.assert_array_equal(np.asarray(got["native"][key]), np.asarray(got["xla"][key]))
    loc = {b: metrics.gt_known_loc_correct(maps, gt, valid, backend=b) for b in ("native", "xla")}
    np.testing.assert_array_equal(np.asarray(loc["native"]), np.asarray(loc["xla"]))
    with pytest.raises(ValueError, match="backend must be one of"):
        metrics.max_box_accuracy(maps, gt, valid, backend="cv2")


def test_thread_setting(monkeypatch, small_batch):
    # INFOCAM_NATIVE_THREADS fixes the kernel's threads per call; any count gives the same boxes.
    maps, gt, valid = small_batch
    q = (maps * np.float32(255)).astype(np.uint8)
    monkeypatch.setenv("INFOCAM_NATIVE_THREADS", "3")
    assert ffi._threads() == 3
    three = ffi._ffi_largest(q)
    monkeypatch.setenv("INFOCAM_NATIVE_THREADS", "1")
    np.testing.assert_array_equal(np.asarray(ffi._ffi_largest(q)), np.asarray(three))
    monkeypatch.setenv("INFOCAM_NATIVE_THREADS", "two")
    with pytest.raises(ValueError, match="INFOCAM_NATIVE_THREADS"):
        ffi._threads()
    monkeypatch.delenv("INFOCAM_NATIVE_THREADS")
    assert ffi._threads() >= 1


# --------------------------------------------------------------------------------------------
# The host path (concrete inputs: quantised, range-checked and gathered inside the kernel)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (3, 40), (12, 13)])
def test_host_path_equals_jit_path(shape):
    # Eager calls on concrete maps take the float32 host entry points; under jit the maps are
    # traced and go through XLA's quantisation and the uint8 FFI call. Both must agree exactly,
    # also on values at the quantisation edges (k / 255 in float32, 1 - ulp, denormals).
    maps = _hostile_maps(*shape, seed=3)
    rng = np.random.default_rng(3)
    edges = (np.arange(256, dtype=np.float32) / np.float32(255))
    maps[-1] = rng.choice(np.concatenate([edges, np.nextafter(edges, np.float32(0))]), shape)
    gt, valid = _gt(len(maps), *shape)
    eager = boxes.largest_box(maps, THRESHOLDS, backend="native")
    jitted = jax.jit(lambda s: boxes.largest_box(s, THRESHOLDS, backend="native"))(maps)
    assert isinstance(eager, jax.Array) and eager.dtype == jitted.dtype
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))
    np.testing.assert_array_equal(np.asarray(eager),
                                  np.asarray(boxes.largest_box(maps, THRESHOLDS, backend="xla")))
    for multi in (False, True):
        eager = boxes.max_contour_iou(maps, THRESHOLDS, gt, valid, multi, backend="native")
        jitted = jax.jit(lambda s, m=multi: boxes.max_contour_iou(s, THRESHOLDS, gt, valid, m,
                                                                  backend="native"))(maps)
        np.testing.assert_array_equal(np.asarray(eager).view(np.uint32),
                                      np.asarray(jitted).view(np.uint32))
    # A JAX array outside jit takes the host path too, with the same result.
    np.testing.assert_array_equal(
        np.asarray(boxes.largest_box(jax.numpy.asarray(maps), THRESHOLDS, backend="native")),
        np.asarray(boxes.largest_box(maps, THRESHOLDS, backend="native")))


@pytest.mark.parametrize("bad", [np.nan, -1e-7, 1.0000001, np.inf, -np.inf])
def test_host_path_range_check(bad):
    maps = np.full((3, 5, 37), 0.5, np.float32)    # 37 columns: SIMD blocks and a scalar tail
    gt, valid = _gt(3, 5, 37)
    table = boxes.level_table(THRESHOLDS)
    for x in (0, 20, 36):                          # in a SIMD block and in the tail
        broken = maps.copy()
        broken[1, 4, x] = bad
        with pytest.raises(ffi.MapRangeError):
            ffi.host_largest_box(broken, table)
        with pytest.raises(ffi.MapRangeError):
            ffi.host_contour_iou(broken, table, gt, valid)
        with pytest.raises(ValueError, match=r"scoremaps must lie in \[0, 1\]"):
            boxes.largest_box(broken, THRESHOLDS, backend="native")
        with pytest.raises(ValueError, match=r"scoremaps must lie in \[0, 1\]"):
            boxes.max_contour_iou(broken, THRESHOLDS, gt, valid, True, backend="native")
    # float64 maps are checked before the float32 cast (1 + 1e-12 rounds to 1.0 in float32).
    with pytest.raises(ValueError, match=r"scoremaps must lie in \[0, 1\]"):
        boxes.largest_box(np.full((1, 2, 2), 1 + 1e-12), THRESHOLDS, backend="native")
