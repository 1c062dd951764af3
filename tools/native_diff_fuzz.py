"""Differential fuzz of two builds of the native box kernel (csrc/boxes_kernel.cc).

Runs both libraries' plain C entry points on the same random maps (smooth CAM-like maps
upsampled from 7/14/28 grids, full-resolution noise, quantisation-edge and checkerboard maps;
random sizes, GT boxes and thread counts) and requires bit-identical outputs: per-level largest
boxes and per-level best contour IoUs. Use it after changing the kernel, against a build of
the previous version:

  git show HEAD~1:csrc/boxes_kernel.cc > /tmp/old.cc
  g++ -std=c++17 -O3 -pthread -fPIC -shared -isystem "$(python -c 'import jax; print(jax.ffi.include_dir())')" \
      /tmp/old.cc -o /tmp/libold.so
  PYTHONPATH=. python tools/native_diff_fuzz.py /tmp/libold.so infocam_jax/native/_boxes_native*.so --rounds 200

When NEW has the float32 entry points (ABI >= 3), they are checked as well: on float maps near
the quantisation edges, against OLD's per-level outputs on NumPy's quantisation gathered at a
random level table, and a NaN / out-of-range value must be reported (-3).

Prints one line per kind and "FUZZ PASSED" when every output matched.
"""
from __future__ import annotations

import argparse
import ctypes

import numpy as np

from infocam_jax.native import ffi


def _load(path):
    lib = ctypes.CDLL(path)
    ffi._bind(lib)  # noqa: SLF001 (the same C signatures)
    return lib


def _smooth(rng, n, h, w):
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        g = int(rng.choice([7, 14, 28]))
        yy, xx = np.mgrid[:g, :g]
        m = sum(rng.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                             / (2 * (s * g) ** 2))
                for cy, cx, s in rng.uniform([0, 0, 0.03], [g, g, 0.3], (rng.integers(1, 6), 3)))
        m = m + rng.uniform(0, 0.05) * rng.random((g, g))
        ry = np.clip(((np.arange(h) + 0.5) * g / h - 0.5), 0, g - 1)
        rx = np.clip(((np.arange(w) + 0.5) * g / w - 0.5), 0, g - 1)
        up = np.array([[np.interp(x, np.arange(g), row) for x in rx] for row in m])
        up = np.array([np.interp(ry, np.arange(g), col) for col in up.T]).T
        out[i] = up
    return out


def _maps(rng, kind, n, h, w):
    if kind == "smooth":
        m = _smooth(rng, n, h, w)
    elif kind == "noisy":
        m = rng.random((n, h, w)) + 3 * _smooth(rng, n, h, w)
    elif kind == "edges":
        m = rng.choice([0.0, 1 / 255, 2 / 255, 0.5, 254 / 255, 1.0], (n, h, w))
    else:  # checker: checkerboards of random periods, some pixels flipped
        yy, xx = np.mgrid[:h, :w]
        m = np.stack([((yy // p + xx // p) % 2).astype(float) for p in rng.integers(1, 4, n)])
        m = np.where(rng.random((n, h, w)) < 0.1, 1 - m, m)
    lo = m.min(axis=(1, 2), keepdims=True)
    span = np.maximum(m.max(axis=(1, 2), keepdims=True) - lo, 1e-12)
    return (((m - lo) / span) * 255).astype(np.uint8)


def _gt(rng, n, h, w, g=3):
    x = np.sort(rng.integers(0, w, (n, g, 2)), axis=-1)
    y = np.sort(rng.integers(0, h, (n, g, 2)), axis=-1)
    boxes = np.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1).astype(np.int32)
    return boxes, rng.random((n, g)) < 0.7


def _run(lib, q, gt, valid, threads):
    n, h, w = q.shape
    boxes = np.empty((n, 256, 4), np.int32)
    iou = np.empty((n, 256), np.float32)
    p = ffi._ptr  # noqa: SLF001
    assert lib.infocam_largest_boxes(p(q), n, h, w, p(boxes), threads) == 0
    assert lib.infocam_contour_iou(p(q), p(gt), p(valid), n, h, w, gt.shape[1], p(iou),
                                   threads) == 0
    return boxes, iou


def _check_f32(old, new, rng, q, gt, valid, threads, ref):
    """The float32 entry points of ``new`` (quantised in the kernel, gathered at a random level
    table) against ``old``'s per-level outputs ``ref`` on NumPy's quantisation of the same maps."""
    n, h, w = q.shape
    # Float maps whose float32 quantisation is q: q/255 nudged up, and the exact ends 0 and 1.
    s = ((q.astype(np.float32) + rng.choice([0.0, 0.25, 0.5, 0.999], q.shape).astype(np.float32))
         / np.float32(255)).astype(np.float32)
    s = np.clip(s, np.float32(0), np.float32(1))
    qs = (s * np.float32(255)).astype(np.uint8)             # the protocol's quantisation
    ref = _run(old, qs, gt, valid, threads) if not np.array_equal(qs, q) else ref
    t = np.sort(rng.random(int(rng.integers(1, 40))))
    table = np.floor(t[:, None] * np.arange(256.0)[None, :]).astype(np.int32)
    top = qs.reshape(n, -1).max(1)
    levels = table[:, top].T                                  # [n, T]
    boxes = np.empty((n, len(t), 4), np.int32)
    iou = np.empty((n, len(t)), np.float32)
    p = ffi._ptr  # noqa: SLF001
    assert new.infocam_largest_boxes_f32(p(s), n, h, w, p(table), len(t), p(boxes), threads) == 0
    assert new.infocam_contour_iou_f32(p(s), p(table), len(t), p(gt), p(valid), n, h, w,
                                       gt.shape[1], p(iou), threads) == 0
    want_boxes = np.take_along_axis(ref[0], levels[..., None], axis=1)
    want_iou = np.take_along_axis(ref[1], levels, axis=1)
    if not (np.array_equal(boxes, want_boxes)
            and np.array_equal(iou.view(np.uint32), want_iou.view(np.uint32))):
        np.save("/tmp/fuzz_failure.npy", s)
        raise SystemExit(f"float32 entry points differ on maps {s.shape} "
                         "(saved to /tmp/fuzz_failure.npy)")
    bad = s.copy()
    bad.flat[int(rng.integers(0, bad.size))] = rng.choice([np.nan, -1e-7, 1.0000001, np.inf])
    assert new.infocam_largest_boxes_f32(p(bad), n, h, w, p(table), len(t), p(boxes),
                                         threads) == -3, "out-of-range map not reported"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    old, new = _load(args.old), _load(args.new)
    f32 = hasattr(new, "infocam_largest_boxes_f32")  # ABI >= 3: also the float32 entry points
    rng = np.random.default_rng(args.seed)
    for kind in ("smooth", "noisy", "edges", "checker"):
        maps = 0
        for _ in range(args.rounds):
            h, w = (int(v) for v in rng.choice([1, 2, 3, 17, 64, 100, 224], 2))
            if rng.random() < 0.1:
                h = w = 224
            n = int(rng.integers(1, 9))
            q = np.ascontiguousarray(_maps(rng, kind, n, h, w))
            gt, valid = _gt(rng, n, h, w)
            a = _run(old, q, gt, valid, int(rng.integers(1, 4)))
            b = _run(new, q, gt, valid, int(rng.integers(0, 4)))
            if f32:
                _check_f32(old, new, rng, q, gt, valid, int(rng.integers(0, 4)), a)
            for x, y, what in zip(a, b, ("largest boxes", "contour IoU")):
                if not np.array_equal(x.view(np.uint32), y.view(np.uint32)):
                    i = int(np.argwhere((x != y).reshape(n, -1).any(1))[0, 0])
                    np.save("/tmp/fuzz_failure.npy", q[i])
                    raise SystemExit(f"{kind} {h}x{w}: {what} differ on map {i} "
                                     "(saved to /tmp/fuzz_failure.npy)")
            maps += n
        print(f"{kind}: {maps} maps identical", flush=True)
    print("FUZZ PASSED")


if __name__ == "__main__":
    main()
