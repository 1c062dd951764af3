#!/usr/bin/env bash
# Runs the native box kernel under AddressSanitizer (+ UndefinedBehaviorSanitizer) on hostile
# maps: 1x1, 1xN, Nx1, checkerboards (1- and 2-pixel), constant, noise, quantisation edges,
# 1024x1024, through the plain C entry points (uint8 and float32) and through XLA's FFI
# (jit + vmap).
#
#   tools/asan_check.sh [python]      # default: python3; prints "ASAN CHECK PASSED" on success
#
# Builds csrc/boxes_kernel.cc into a separate library under a temporary directory (never the
# package's), loads it with INFOCAM_NATIVE_LIB and preloads libasan into the Python process.
# Leak detection is off: CPython and XLA keep allocations until exit by design.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-python3}"
CXX="${CXX:-g++}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
include="$("$PYTHON" -c 'import jax; print(jax.ffi.include_dir())')"
"$CXX" -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=all -fPIC -shared -pthread -isystem "$include" \
  csrc/boxes_kernel.cc -o "$work/libboxes_asan.so"
libasan="$("$CXX" -print-file-name=libasan.so)"
libubsan="$("$CXX" -print-file-name=libubsan.so)"
cat > "$work/check.py" <<'PY'
import numpy as np
import jax
from infocam_jax import boxes
from infocam_jax.native import ffi as _native

assert _native.available(), _native.unavailable_reason()
lib = _native.library()
rng = np.random.default_rng(0)


def hostile(h, w):
    yy, xx = np.mgrid[:h, :w]
    maps = [((yy + xx) % 2) * 255, ((yy // 2 + xx // 2) % 2) * 255, np.full((h, w), 255),
            np.zeros((h, w)), np.full((h, w), 7), rng.integers(0, 256, (h, w)),
            rng.choice([0, 1, 254, 255], (h, w))]
    return np.stack(maps).astype(np.uint8)


shapes = [(1, 1), (1, 2), (2, 1), (1, 97), (97, 1), (2, 2), (3, 3), (5, 64), (64, 5),
          (31, 29), (224, 224), (1024, 1024)]
for h, w in shapes:
    q = hostile(h, w)
    gt = np.stack([rng.integers(0, w, (len(q), 3)), rng.integers(0, h, (len(q), 3)),
                   rng.integers(0, w, (len(q), 3)), rng.integers(0, h, (len(q), 3))], -1)
    gt = np.concatenate([np.minimum(gt[..., :2], gt[..., 2:]),
                         np.maximum(gt[..., :2], gt[..., 2:])], -1).astype(np.int32)
    valid = rng.random((len(q), 3)) < 0.7
    a = _native._host_largest(lib, q)                       # plain C, all threads
    b = _native._host_iou(lib, q, gt, valid)
    assert np.array_equal(np.asarray(_native.largest_boxes(q, ffi=True)), a)
    assert np.array_equal(np.asarray(_native.contour_iou(q, gt, valid, ffi=True)), b)
    # The float32 host entry points (quantised in the kernel, gathered at a level table).
    f = (q.astype(np.float32) / np.float32(255)).astype(np.float32)
    qs = (f * np.float32(255)).astype(np.uint8)
    table = boxes.level_table(np.linspace(0, 1, 11))
    levels = table[:, qs.reshape(len(qs), -1).max(1)].T
    assert np.array_equal(_native.host_largest_box(f, table),
                          np.take_along_axis(_native._host_largest(lib, qs), levels[..., None], 1))
    assert np.array_equal(_native.host_contour_iou(f, table, gt, valid),
                          np.take_along_axis(_native._host_iou(lib, qs, gt, valid), levels, 1))
    f[-1].flat[-1] = np.nan
    try:
        _native.host_largest_box(f, table)
        raise AssertionError("a NaN map was not reported")
    except _native.MapRangeError:
        pass
    print(f"{h}x{w}: ok", flush=True)
# jit + vmap through the public API (broadcast_all adds a leading batch axis).
maps = rng.random((2, 3, 17, 23)).astype(np.float32)
th = np.arange(100) / 100
out = jax.jit(jax.vmap(lambda s: boxes.largest_box(s, th, backend="native")))(maps)
assert out.shape == (2, 3, 100, 4)
print("ASAN CHECK PASSED")
PY
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
LD_PRELOAD="$libasan $libubsan" INFOCAM_NATIVE_LIB="$work/libboxes_asan.so" \
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$work/check.py"
