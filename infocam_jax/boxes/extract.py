"""Score maps to boxes, following the WSOL evaluation protocol of Choe et al. (CVPR 2020).

Pipeline (all batched and jit-compiled, no Python loop over images or thresholds):

1. :func:`upsample` a ``[B, h, w]`` map to the image size like ``cv2.resize`` (``INTER_CUBIC``:
   Keys kernel a = -0.75, half-pixel centres, replicated border; or ``INTER_LINEAR``).
2. :func:`normalize` each map to [0, 1]: min-max (the protocol, default) or ``max(m, 0) / max(m)``
   (the paper's reading); a constant / non-positive or non-finite map -> all zeros.
3. For each threshold ``t``: quantise ``q = uint8(255 * s)`` (truncation, as ``np.uint8`` does),
   foreground ``q > int(t * max(q))`` with the integer computed in float64 exactly as NumPy
   does, 8-connected components, and either
   * :func:`largest_box`: the bounding box of the component whose outer contour has the largest
     area as ``cv2.contourArea`` measures it (polygon through the boundary pixel centres, so a
     one-pixel-wide region has area 0); on equal areas the component whose first pixel in
     raster order comes last wins (OpenCV lists contours in that order and Python's ``max``
     keeps the first maximum); or
   * :func:`max_contour_iou`: the best IoU with the ground truth over the boxes of every
     contour ``cv2.findContours(RETR_TREE)`` lists: each component's outer contour and each
     hole's contour (a hole, a 4-connected background region enclosed by a component, has a
     contour through the foreground pixels around it, so its box is the hole's box grown by one
     pixel).
   A box is ``(x0, y0, x1, y1)`` with ``x1 = min(x_max + 1, W - 1)``, ``y1 = min(y_max + 1,
   H - 1)`` (``cv2.boundingRect`` gives ``x + w`` and the protocol clips it); no foreground gives
   ``(0, 0, 0, 0)``.

How: level sets of a uint8 map are nested, so one union-find pass over the pixels in descending
value order yields every component at every one of the 256 levels at once; the T thresholds are
then a gather, so the cost does not grow with T. Two implementations of that pass give identical
results (``backend=``, resolved by :func:`resolve_backend`):

* ``"native"``: a compiled C++ kernel (``csrc/boxes_kernel.cc``, :mod:`infocam_jax.native.ffi`)
  called through the XLA FFI on the CPU platform (jit, vmap and pmap work), parallel over the
  batch on all cores; on other platforms the same kernel runs on the host through a callback.
  Concrete inputs (NumPy, or JAX arrays outside ``jit``) skip XLA: one host call quantises and
  range-checks the float32 maps in the kernel and gathers the thresholds' levels.
* ``"xla"``: the pure-JAX pass (:mod:`infocam_jax.boxes.components`), the portable reference.
* ``"auto"`` (default): ``"native"`` when JAX's default backend is the CPU and the kernel
  loaded, else ``"xla"``. On GPU/TPU it is ``"xla"``: the host round trip (device -> host copy
  of the uint8 maps, the kernel, copy back) is the alternative, but it has not been measured
  on an accelerator, so the default stays on the device; pass ``backend="native"`` to use it.

The contour area of a component's outer contour equals the cell count (2x2 pixel cells fully
inside count 1, cells with 3 of 4 pixels count 1/2) of the component with its holes filled, so
the largest-box pass runs on the grayscale hole-filled map (whose level sets are exactly the
filled top-level components; nested components are never the largest).

Thresholds are host-side values (Python/NumPy, float64): the ``[T, 256]`` table of
``int(t * m)`` is built on the host with NumPy.

Checks (``infocam_jax._checks``; a ``ValueError`` names the argument, the first offending index
and its value): concrete score maps must be finite and in [0, 1]; concrete valid GT boxes must
have ``x0 <= x1``, ``y0 <= y1`` and lie inside the ``H x W`` map (rows with ``gt_valid`` False
are padding and are not checked), ``gt_valid`` 0/1. Under ``jit`` traced values cannot be
checked: score maps outside [0, 1] are then clipped to [0, 1] by the quantisation, silently
(NaN quantises to an unspecified level), and GT boxes are used as given.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import _checks
from infocam_jax.boxes import components
from infocam_jax.native import ffi, protocol

_METHODS = ("bicubic", "bilinear")
BACKENDS = ("auto", "native", "xla")
_CUBIC_A = -0.75


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def _check_map_shape(maps, name: str, unit_range: bool):
    if maps.ndim != 3:
        raise ValueError(f"{name} must have shape [B, H, W] (rank 3), got shape {maps.shape}")
    if min(maps.shape[1:]) < 1:
        raise ValueError(f"{name} must have H, W >= 1, got shape {maps.shape}")
    if unit_range and maps.shape[1] * maps.shape[2] >= 2**23:
        raise ValueError(f"{name} must have H * W < 2**23 pixels, got shape {maps.shape}")


def _check_maps(maps, name: str, unit_range: bool):
    # A NumPy input is checked on the host and transferred once with device_put (jnp.asarray
    # of a large host array costs several times a plain transfer).
    host = isinstance(maps, np.ndarray) and maps.dtype != object
    if not host:
        maps = jnp.asarray(maps)
    _check_map_shape(maps, name, unit_range)
    if unit_range:  # concrete maps only; two reductions, no temporaries
        _checks.check_unit_interval(maps, name)
    if host:
        return jax.device_put(maps.astype(np.float32, copy=False))
    return maps.astype(jnp.float32)


def _host_maps(maps, name: str, backend: str, *others):
    """The maps as checked float32 NumPy ``[B, H, W]`` when the native kernel can take them
    directly on the host (backend "native"; the maps and ``others`` concrete), else None.

    Float32 maps are range-checked by the kernel itself while it quantises them (one pass);
    other dtypes are checked here, before the cast, as :func:`_check_maps` does.
    """
    if backend != "native" or not all(_checks.is_concrete(x) for x in (maps, *others)):
        return None
    if not (isinstance(maps, np.ndarray) and maps.dtype != object):
        if not isinstance(maps, jax.Array):
            return None
        maps = np.asarray(maps)
    _check_map_shape(maps, name, unit_range=True)
    if maps.dtype != np.float32:
        _checks.check_unit_interval(maps, name)
    return np.ascontiguousarray(maps, np.float32)


def _host_call(fn, maps, name, *args):
    try:
        return jnp.asarray(fn(maps, *args))
    except ffi.MapRangeError:
        raise _checks.unit_interval_error(maps, name) from None


def level_table(thresholds) -> np.ndarray:
    """int32 ``[T, 256]``: ``int(t * m)`` for each threshold t and map maximum m = 0..255.

    Computed in float64 exactly as the protocol's ``int(threshold * np.max(uint8_map))``.
    """
    return protocol.level_table(np.asarray(_checks.check_thresholds(thresholds)))


# --------------------------------------------------------------------------------------------
# Upsampling and normalisation
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _resize_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
    """float32 ``[n_out, n_in]`` interpolation weights of ``cv2.resize`` along one axis."""
    scale = n_in / n_out
    x = (np.arange(n_out) + 0.5) * scale - 0.5
    sx = np.floor(x)
    f = x - sx
    sx = sx.astype(np.int64)
    mat = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    if method == "bilinear":
        low = sx < 0
        high = sx >= n_in - 1
        f = np.where(low | high, 0.0, f)
        sx = np.clip(sx, 0, n_in - 1)
        np.add.at(mat, (rows, sx), 1.0 - f)
        np.add.at(mat, (rows, np.minimum(sx + 1, n_in - 1)), f)
        return mat.astype(np.float32)
    a = _CUBIC_A
    w0 = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
    w1 = ((a + 2) * f - (a + 3)) * f * f + 1
    w2 = ((a + 2) * (1 - f) - (a + 3)) * (1 - f) * (1 - f) + 1
    w3 = 1.0 - w0 - w1 - w2
    for k, w in zip(range(-1, 3), (w0, w1, w2, w3)):
        np.add.at(mat, (rows, np.clip(sx + k, 0, n_in - 1)), w)
    return mat.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("size", "method"))
def _upsample(maps, size, method):
    wy = jnp.asarray(_resize_matrix(maps.shape[1], size[0], method))
    wx = jnp.asarray(_resize_matrix(maps.shape[2], size[1], method))
    return jnp.einsum("Hh,bhw,Ww->bHW", wy, maps, wx, precision=jax.lax.Precision.HIGHEST)


def upsample(maps, size, method: str = "bicubic"):
    """Resize maps like ``cv2.resize(m, (W, H), interpolation=INTER_CUBIC | INTER_LINEAR)``.

    Args:
      maps: float ``[B, h, w]``.
      size: ``(H, W)`` output size.
      method: ``"bicubic"`` (Keys a = -0.75, replicated border) or ``"bilinear"``.

    Returns:
      float32 ``[B, H, W]`` (equal to OpenCV's up to float32 rounding of the summation order).
    """
    maps = _check_maps(maps, "maps", unit_range=False)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with H, W >= 1, got {size}")
    return _upsample(maps, size, method)


NORMALIZE_MODES = ("minmax", "max")


def _true_divide(num, den):
    # A true per-element division, as NumPy does: XLA would otherwise turn the division by a
    # broadcast into a multiplication by a reciprocal, one ulp off for some values.
    return num / jax.lax.optimization_barrier(jnp.broadcast_to(den, num.shape))


@functools.partial(jax.jit, static_argnames=("mode",))
def _normalize(maps, mode="minmax"):
    finite = jnp.all(jnp.isfinite(maps), axis=(1, 2), keepdims=True)
    hi = jnp.max(maps, axis=(1, 2), keepdims=True)
    if mode == "max":
        bad = ~finite | ~(hi > 0)
        out = _true_divide(jnp.maximum(maps, 0.0), jnp.where(bad, 1.0, hi))
        return jnp.where(bad, 0.0, out)
    lo = jnp.min(maps, axis=(1, 2), keepdims=True)
    shifted = maps - lo
    span = jnp.max(shifted, axis=(1, 2), keepdims=True)
    bad = ~finite | (lo == hi)
    return jnp.where(bad, 0.0, _true_divide(shifted, jnp.where(bad, 1.0, span)))


def _check_mode(mode: str) -> str:
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize mode must be one of {NORMALIZE_MODES}, got {mode!r}")
    return mode


def normalize(maps, mode: str = "minmax"):
    """Per-map normalisation to [0, 1].

    * ``"minmax"`` (default, the WSOL protocol's ``normalize_scoremap`` and the authors' CUB /
      Tiny-ImageNet code): ``s = (m - min) / max(m - min)``; a constant map becomes all zeros.
    * ``"max"`` (the paper's reading, §3.1: "more than 20% of the maximum"):
      ``s = max(m, 0) / max(m)``; a map with no positive value becomes all zeros. Unlike
      min-max it keeps the sign: a negative background stays at 0 instead of being lifted.

    Computed in float32 with a true division; a map containing any NaN or infinity becomes
    all zeros in both modes.

    Args:
      maps: float ``[B, H, W]``.
      mode: ``"minmax"`` or ``"max"``.

    Returns:
      float32 ``[B, H, W]`` in [0, 1].
    """
    return _normalize(_check_maps(maps, "maps", unit_range=False), _check_mode(mode))


def scoremaps(maps, size, method: str = "bicubic", normalize: str = "minmax"):  # noqa: A002
    """``normalize(upsample(maps, size, method), normalize)``: float32 ``[B, H, W]`` in [0, 1].

    Args:
      maps: float ``[B, h, w]`` maps at feature resolution.
      size: ``(H, W)`` image size.
      method: ``"bicubic"`` or ``"bilinear"`` (see :func:`upsample`).
      normalize: ``"minmax"`` (protocol) or ``"max"`` (paper), see :func:`normalize`.
    """
    mode = _check_mode(normalize)
    return _normalize(upsample(maps, size, method), mode)


# --------------------------------------------------------------------------------------------
# Backend
# --------------------------------------------------------------------------------------------
def resolve_backend(backend: str = "auto") -> str:
    """The box pass that ``backend`` selects here and now: ``"native"`` or ``"xla"``.

    ``"auto"`` is ``"native"`` when ``jax.default_backend()`` is ``"cpu"`` and the compiled
    kernel loaded (the first call loads it; if it cannot, one RuntimeWarning says why), else
    ``"xla"``. ``"native"`` raises a RuntimeError when the kernel is unavailable (off the CPU it
    runs on the host through a callback). ``"xla"`` is always available.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "xla":
        return "xla"
    if backend == "auto":
        on_cpu = jax.default_backend() == "cpu"
        return "native" if on_cpu and ffi.available() else "xla"
    if not ffi.available():
        raise RuntimeError(f"backend='native': the compiled box kernel is unavailable "
                           f"({ffi.unavailable_reason()}); use backend='auto' or 'xla'")
    return "native"


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------
def _quantize(scoremaps):
    """uint8 quantisation ``np.uint8(s * 255)`` (float32 product, truncation) as int32."""
    return jnp.clip(scoremaps * jnp.float32(255), 0, 255).astype(jnp.int32)


def _levels(q, table):
    """Per-image foreground level ``int(t * max(q))``: ``[B, T]`` int32."""
    maxq = jnp.max(q, axis=(1, 2))
    return jnp.take(table, maxq, axis=1).T


@jax.jit
def _largest_box(scoremaps, table):
    _, h, w = scoremaps.shape
    q = _quantize(scoremaps)
    raw, found = components.largest_components(components.fill_holes(q))
    boxes = jnp.stack([raw[..., 0], raw[..., 1], jnp.minimum(raw[..., 2] + 1, w - 1),
                       jnp.minimum(raw[..., 3] + 1, h - 1)], axis=-1)
    boxes = jnp.where(found[..., None], boxes, 0)
    levels = _levels(q, table)
    return jnp.take_along_axis(boxes, levels[..., None], axis=1)


@jax.jit
def _largest_box_native(scoremaps, table):
    q = _quantize(scoremaps)
    per_level = ffi.largest_boxes(q.astype(jnp.uint8))               # [B, 256, 4]
    return jnp.take_along_axis(per_level, _levels(q, table)[..., None], axis=1)


def largest_box(scoremaps, thresholds, backend: str = "auto"):
    """Box of the largest contour at each threshold, as the WSOL protocol extracts it.

    Args:
      scoremaps: float ``[B, H, W]`` in [0, 1] (see :func:`scoremaps`); concrete maps outside
        [0, 1] or NaN raise ValueError, traced ones are clipped (module docstring).
      thresholds: host array ``[T]`` in [0, 1] (Python/NumPy values, converted to float64).
      backend: ``"auto"`` | ``"native"`` | ``"xla"`` (see :func:`resolve_backend`); all give
        the same boxes.

    Returns:
      int32 ``[B, T, 4]`` boxes ``(x0, y0, x1, y1)``; ``(0, 0, 0, 0)`` where the foreground
      ``q > int(t * max(q))`` is empty.
    """
    return _largest_box_any(scoremaps, thresholds, resolve_backend(backend))


def _largest_box_any(scoremaps, thresholds, backend: str):
    host = _host_maps(scoremaps, "scoremaps", backend)
    if host is not None:  # concrete maps: one kernel call does quantise, boxes and gather
        table = level_table(thresholds)
        return _host_call(ffi.host_largest_box, host, "scoremaps", table)
    scoremaps = _check_maps(scoremaps, "scoremaps", unit_range=True)
    table = jnp.asarray(level_table(thresholds))
    return _largest_box_fn(backend)(scoremaps, table)


def _largest_box_fn(backend: str):
    return _largest_box_native if backend == "native" else _largest_box


@jax.jit
def _multi_iou(scoremaps, table, gt_boxes, gt_valid):
    q = _quantize(scoremaps)
    best = components.best_contour_iou(q, gt_boxes, gt_valid)           # [B, 256]
    per_t = jnp.take_along_axis(best, _levels(q, table), axis=1)         # [B, T]
    empty = components.iou_with_gt(jnp.zeros((q.shape[0], 1, 4), jnp.int32), gt_boxes,
                                    gt_valid)
    return jnp.where(per_t < 0, empty, per_t)


@jax.jit
def _multi_iou_native(scoremaps, table, gt_boxes, gt_valid):
    q = _quantize(scoremaps)
    best = ffi.contour_iou(q.astype(jnp.uint8), gt_boxes, gt_valid)  # [B, 256]
    return jnp.take_along_axis(best, _levels(q, table), axis=1)


def max_contour_iou(scoremaps, thresholds, gt_boxes, gt_valid, multi_contour: bool = False,
                    backend: str = "auto"):
    """Best IoU with the ground truth of the protocol's contour boxes, at each threshold.

    The IoU counts pixels inclusively (``(x1 - x0 + 1) * (y1 - y0 + 1)``, intersection clamped
    at 0) and is maximised over the valid GT boxes and over the contour boxes considered: only
    the largest contour's box (``multi_contour=False``, MaxBoxAcc) or the box of every contour
    ``cv2.findContours(RETR_TREE)`` lists, outer and hole contours alike (``True``,
    MaxBoxAccV2). No foreground gives the box ``(0, 0, 0, 0)``, which is then scored.

    Args:
      scoremaps: float ``[B, H, W]`` in [0, 1]; concrete maps outside [0, 1] or NaN raise
        ValueError, traced ones are clipped (module docstring).
      thresholds: host array ``[T]`` in [0, 1].
      gt_boxes: int ``[B, G, 4]`` ``(x0, y0, x1, y1)``, inclusive pixel coordinates; concrete
        valid boxes must have ``x0 <= x1``, ``y0 <= y1`` and lie inside the ``H x W`` map.
      gt_valid: bool ``[B, G]`` (or 0/1); an image without a valid GT box scores 0; rows
        with False are padding and are not checked.
      multi_contour: static bool.
      backend: ``"auto"`` | ``"native"`` | ``"xla"`` (see :func:`resolve_backend`).

    Returns:
      float32 ``[B, T]``.
    """
    backend = resolve_backend(backend)
    host = _host_maps(scoremaps, "scoremaps", backend, gt_boxes, gt_valid)
    if host is not None:  # concrete inputs: quantise, boxes and gather in one kernel call
        gt_boxes, gt_valid = _checks.check_gt(gt_boxes, gt_valid, host.shape[0],
                                              host.shape[1:])
        if not multi_contour:
            return components.iou_with_gt(_largest_box_any(host, thresholds, backend),
                                           gt_boxes, gt_valid)
        return _host_call(ffi.host_contour_iou, host, "scoremaps", level_table(thresholds),
                          np.asarray(gt_boxes), np.asarray(gt_valid))
    scoremaps = _check_maps(scoremaps, "scoremaps", unit_range=True)
    gt_boxes, gt_valid = _checks.check_gt(gt_boxes, gt_valid, scoremaps.shape[0],
                                          scoremaps.shape[1:])
    table = jnp.asarray(level_table(thresholds))
    if not multi_contour:
        return components.iou_with_gt(_largest_box_fn(backend)(scoremaps, table), gt_boxes,
                                       gt_valid)
    multi = _multi_iou_native if backend == "native" else _multi_iou
    return multi(scoremaps, table, gt_boxes, gt_valid)
