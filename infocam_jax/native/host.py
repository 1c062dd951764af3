"""The compiled CPU box kernel through its plain C entry points: NumPy in, NumPy out, no JAX.

Internal helper of :mod:`infocam_jax.native.ffi` (which adds the XLA FFI handlers on top) and of
the score-map tool (:mod:`infocam_jax.evaluation.scoremaps.score`), which calls the kernel on
the host without importing JAX at all. :func:`library` loads ``infocam_jax/native/_boxes_native*.so``
with ctypes, checks its C ABI version and runs both entry points once on a tiny map whose answer
is known; any failure (library absent, wrong ABI, wrong answer) gives one warning and
:func:`library` returns None.

Environment: ``INFOCAM_NATIVE_LIB`` loads a library from another path (the AddressSanitizer
build of tools/asan_check.sh); ``INFOCAM_DISABLE_NATIVE=1`` turns the kernel off.

Calls (``q`` uint8 ``[..., H, W]``, the quantised maps; every leading axis is batch; ``threads``
0 = the kernel's default, every CPU of the process):

* :func:`largest_boxes`: int32 ``[..., 256, 4]``, for each level ``L`` the protocol's largest
  box of ``{q > L}``, already clipped, ``(0, 0, 0, 0)`` when empty.
* :func:`contour_iou`: float32 ``[..., 256]``, for each level the best IoU with the valid GT
  boxes over every outer and hole contour box; an empty level scores the box ``(0, 0, 0, 0)``.
"""
from __future__ import annotations

import ctypes
import os
import threading
import warnings
from pathlib import Path

import numpy as np

NUM_LEVELS = 256
ABI_VERSION = 3
_lock = threading.Lock()
_state: dict = {}


def library_path() -> Path | None:
    """Path of the compiled library: ``$INFOCAM_NATIVE_LIB`` or the one next to this file."""
    override = os.environ.get("INFOCAM_NATIVE_LIB")
    if override:
        return Path(override)
    found = sorted(Path(__file__).parent.glob("_boxes_native*.so"))
    return found[0] if found else None


def _bind(lib):
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.infocam_boxes_abi_version.restype = ctypes.c_int
    lib.infocam_largest_boxes.argtypes = [ptr, i64, i64, i64, ptr, ctypes.c_int]
    lib.infocam_largest_boxes.restype = ctypes.c_int
    lib.infocam_contour_iou.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ptr, ctypes.c_int]
    lib.infocam_contour_iou.restype = ctypes.c_int
    if not hasattr(lib, "infocam_largest_boxes_f32"):  # ABI < 3 (tools/native_diff_fuzz.py)
        return
    lib.infocam_largest_boxes_f32.argtypes = [ptr, i64, i64, i64, ptr, i64, ptr, ctypes.c_int]
    lib.infocam_largest_boxes_f32.restype = ctypes.c_int
    lib.infocam_contour_iou_f32.argtypes = [ptr, ptr, i64, ptr, ptr, i64, i64, i64, i64, ptr,
                                            ctypes.c_int]
    lib.infocam_contour_iou_f32.restype = ctypes.c_int


def _self_test_case():
    """A 4x5 map with a 2x2 blob: largest box (1, 1, 3, 3) for L < 200, empty from 200 on."""
    q = np.zeros((1, 4, 5), np.uint8)
    q[0, 1:3, 1:3] = 200
    boxes = np.zeros((1, NUM_LEVELS, 4), np.int32)
    boxes[0, :200] = (1, 1, 3, 3)
    gt = np.array([[[0, 0, 2, 2]]], np.int32)
    iou = np.full((1, NUM_LEVELS), np.float32(1) / np.float32(9), np.float32)  # box (0,0,0,0)
    iou[0, :200] = np.float32(4) / np.float32(14)
    return q, gt, np.ones((1, 1), bool), boxes, iou


def _load_host():
    """The ctypes library, ABI-checked and self-tested through its C entry points."""
    path = library_path()
    if os.environ.get("INFOCAM_DISABLE_NATIVE", "") not in ("", "0"):
        raise RuntimeError("disabled by INFOCAM_DISABLE_NATIVE")
    if path is None or not path.exists():
        raise RuntimeError(
            "the compiled library infocam_jax/native/_boxes_native*.so is missing (it is built by "
            "`pip install -e .`, which needs a C++ compiler; in a checkout: "
            "`python setup.py build_ext --inplace`)")
    lib = ctypes.CDLL(str(path))
    _bind(lib)
    version = lib.infocam_boxes_abi_version()
    if version != ABI_VERSION:
        raise RuntimeError(f"{path} has ABI version {version}, this package expects "
                           f"{ABI_VERSION}: rebuild it (pip install -e .)")
    q, gt, valid, want_boxes, want_iou = _self_test_case()
    if not (np.array_equal(_host_largest(lib, q), want_boxes)
            and np.array_equal(_host_iou(lib, q, gt, valid), want_iou)):
        raise RuntimeError(f"{path} gives wrong answers on its self test: rebuild it")
    # The float32 entry points (quantised in the kernel): the blob at 1.0 is q = 255; level 0.
    maps = q.astype(np.float32) / np.float32(200)
    table = np.zeros((1, NUM_LEVELS), np.int32)
    out = np.empty((1, 1, 4), np.int32)
    iou = np.empty((1, 1), np.float32)
    if (lib.infocam_largest_boxes_f32(_ptr(maps), 1, 4, 5, _ptr(table), 1, _ptr(out), 1) != 0
            or lib.infocam_contour_iou_f32(_ptr(maps), _ptr(table), 1, _ptr(gt), _ptr(valid), 1,
                                           4, 5, 1, _ptr(iou), 1) != 0
            or not np.array_equal(out[:, 0], want_boxes[:, 0])
            or not np.array_equal(iou[:, 0], want_iou[:, 0])):
        raise RuntimeError(f"{path}: the float32 entry points give wrong answers on the self "
                           "test: rebuild it")
    return lib


def load_once(state: dict, lock, loader, warn=lambda: True):
    """``state["lib"]``, filled on the first call by ``loader()``; a failure stores None and the
    reason (``state["error"]``) and warns once when ``warn()`` says so (the shared loader of
    this module and of :mod:`infocam_jax.native.ffi`)."""
    with lock:
        if "lib" not in state:
            try:
                state["lib"] = loader()
            except Exception as err:  # noqa: BLE001 (any failure means: use the JAX pass)
                state["lib"] = None
                state["error"] = f"{type(err).__name__}: {err}"
                if warn():
                    warnings.warn(f"infocam_jax: the native box kernel is unavailable ({err}); "
                                  "using the pure-JAX pass (slower on CPU)", RuntimeWarning,
                                  stacklevel=4)
        return state["lib"]


def library():
    """The loaded, self-tested ctypes library, or None (warned once)."""
    return load_once(_state, _lock, _load_host)


def unavailable_reason() -> str | None:
    """Why :func:`library` is None (None when it loaded or was not yet tried)."""
    return _state.get("error")


# --------------------------------------------------------------------------------------------
# Host (NumPy) calls through the C entry points
# --------------------------------------------------------------------------------------------
def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _host_largest(lib, q, threads: int = 0):
    q = np.ascontiguousarray(q, np.uint8)
    lead, (h, w) = q.shape[:-2], q.shape[-2:]
    out = np.empty(lead + (NUM_LEVELS, 4), np.int32)
    rc = lib.infocam_largest_boxes(_ptr(q), int(np.prod(lead, dtype=np.int64)), h, w, _ptr(out),
                                   int(threads))
    if rc != 0:
        raise RuntimeError(f"native largest-box kernel failed (code {rc}) on maps {q.shape}")
    return out


def _host_iou(lib, q, gt_boxes, gt_valid, threads: int = 0):
    q = np.ascontiguousarray(q, np.uint8)
    gt_boxes = np.ascontiguousarray(gt_boxes, np.int32)
    gt_valid = np.ascontiguousarray(gt_valid, np.bool_)
    lead, (h, w) = q.shape[:-2], q.shape[-2:]
    out = np.empty(lead + (NUM_LEVELS,), np.float32)
    rc = lib.infocam_contour_iou(_ptr(q), _ptr(gt_boxes), _ptr(gt_valid),
                                 int(np.prod(lead, dtype=np.int64)), h, w, gt_boxes.shape[-2],
                                 _ptr(out), int(threads))
    if rc != 0:
        raise RuntimeError(f"native contour-IoU kernel failed (code {rc}) on maps {q.shape}")
    return out


def env_threads() -> int:
    """``INFOCAM_NATIVE_THREADS`` as a positive int, or 0 when unset (the kernel's default)."""
    setting = os.environ.get("INFOCAM_NATIVE_THREADS", "").strip()
    if not setting:
        return 0
    try:
        value = int(setting)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"INFOCAM_NATIVE_THREADS must be a positive integer, got {setting!r}")
    return value


def _require():
    lib = library()
    if lib is None:
        raise RuntimeError(f"native box kernel unavailable: {unavailable_reason()}")
    return lib


def largest_boxes(q, threads: int = 0) -> np.ndarray:
    """Per-level largest boxes on the host: uint8 ``[..., H, W]`` -> int32 ``[..., 256, 4]``."""
    return _host_largest(_require(), q, threads or env_threads())


def contour_iou(q, gt_boxes, gt_valid, threads: int = 0) -> np.ndarray:
    """Per-level best contour IoU on the host: uint8 ``[..., H, W]``, int32 ``[..., G, 4]``,
    bool ``[..., G]`` -> float32 ``[..., 256]``."""
    return _host_iou(_require(), q, gt_boxes, gt_valid, threads or env_threads())


__all__ = ["contour_iou", "env_threads", "largest_boxes", "library", "library_path", "unavailable_reason"]
