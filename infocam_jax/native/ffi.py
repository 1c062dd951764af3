"""The compiled CPU box kernel (``csrc/boxes_kernel.cc``): loading, registration and calls.

Internal helper of :mod:`infocam_jax.boxes`. ``pip install`` builds the kernel into
``infocam_jax/native/_boxes_native*.so`` (see setup.py; ``python setup.py build_ext --inplace`` in a
checkout). On first use the library is loaded with ctypes, its C ABI version is checked and its
C entry points are self-tested (:mod:`infocam_jax.native.host`, which needs no JAX), its two
XLA FFI handlers are registered for the CPU platform, and both are run once on a tiny map whose
answer is known through a compiled ``jax.ffi.ffi_call``; any failure
(library absent, no compiler at install time, an FFI ABI mismatch) gives one warning and
:func:`available` returns False, so callers use the pure-JAX pass instead.

Environment: ``INFOCAM_NATIVE_LIB`` loads a library from another path (the AddressSanitizer
build of tools/asan_check.sh); ``INFOCAM_DISABLE_NATIVE=1`` turns the kernel off;
``INFOCAM_NATIVE_THREADS=N`` sets the kernel's threads per call (default: this process's CPUs,
from its affinity mask, divided by the number of local CPU devices).

Calls (``q`` uint8 ``[..., H, W]``, the quantised maps; every leading axis is batch):

* :func:`largest_boxes`: int32 ``[..., 256, 4]``, for each level ``L`` the protocol's largest
  box of ``{q > L}``, already clipped, ``(0, 0, 0, 0)`` when empty.
* :func:`contour_iou`: float32 ``[..., 256]``, for each level the best IoU with the valid GT
  boxes over every outer and hole contour box; an empty level scores the box ``(0, 0, 0, 0)``.

Host calls (NumPy in, NumPy out; ``maps`` float32 ``[B, H, W]`` in [0, 1], quantised and
range-checked inside the kernel, ``table`` the int32 ``[T, 256]`` ``boxes.level_table``):

* :func:`host_largest_box`: int32 ``[B, T, 4]``; :func:`host_contour_iou`: float32 ``[B, T]``,
  the per-level results gathered at ``table[:, max q]``. A value outside [0, 1] or NaN raises
  :class:`MapRangeError`. :mod:`infocam_jax.boxes` uses them for concrete inputs.

On the CPU platform the uint8 calls are ``jax.ffi.ffi_call`` s (jit, vmap via
``broadcast_all``, pmap), each spreading its batch over this process's CPUs divided by the
number of local CPU devices; elsewhere a ``jax.pure_callback`` runs the same kernel on the host
(on every CPU).
"""
from __future__ import annotations

import os
import threading

import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax.native import host
from infocam_jax.native.host import (ABI_VERSION, NUM_LEVELS, _bind, _host_iou,  # noqa: F401
                                      _host_largest, _ptr, _self_test_case, library_path)

_LARGEST = "infocam_largest_boxes"
_IOU = "infocam_contour_iou"
_lock = threading.Lock()
_state: dict = {}


def _load():
    lib = host.library()
    if lib is None:
        raise RuntimeError(host.unavailable_reason())
    for name, symbol in ((_LARGEST, "InfocamLargestBoxes"), (_IOU, "InfocamContourIou")):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    # Run the FFI handlers once through XLA: an FFI ABI mismatch fails here, not later.
    q, gt, valid, want_boxes, want_iou = _self_test_case()
    with jax.ensure_compile_time_eval():
        args = jax.device_put((q, gt, valid), jax.local_devices(backend="cpu")[0])
        got = jax.jit(_ffi_largest)(args[0]), jax.jit(_ffi_iou)(*args)
        if not (np.array_equal(np.asarray(got[0]), want_boxes)
                and np.array_equal(np.asarray(got[1]), want_iou)):
            raise RuntimeError(f"{library_path()}: the XLA FFI call gives wrong answers on "
                               "its self test")
    return lib


def library():
    """The loaded, registered and self-tested ctypes library, or None (warned once)."""
    # When the host library itself failed, _native_host has warned already.
    return host.load_once(_state, _lock, _load,
                                  warn=lambda: host.library() is not None)


def available() -> bool:
    """Whether the compiled kernel loaded (the first call loads it; a failure warns once)."""
    return library() is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True or not yet tried)."""
    return _state.get("error") or host.unavailable_reason()


# --------------------------------------------------------------------------------------------
# Host calls on float32 maps (quantised in the kernel)
# --------------------------------------------------------------------------------------------
class MapRangeError(ValueError):
    """A float map handed to a ``host_*`` call has a value outside [0, 1] or NaN."""


def _host_f32_call(fn, name, maps, table, *, out_shape, out_dtype):
    maps = np.ascontiguousarray(maps, np.float32)
    table = np.ascontiguousarray(table, np.int32)
    n, h, w = maps.shape
    out = np.empty((n, table.shape[0]) + out_shape, out_dtype)
    rc = fn(maps, table, out, n, h, w, int(_threads()))
    if rc == -3:
        raise MapRangeError("maps must lie in [0, 1]")
    if rc != 0:
        raise RuntimeError(f"native {name} kernel failed (code {rc}) on maps {maps.shape}")
    return out


def host_largest_box(maps, table):
    """Largest boxes at the thresholds' levels, all on the host, quantised in the kernel.

    ``maps``: float32 ``[B, H, W]`` in [0, 1] (NumPy); ``table``: int32 ``[T, 256]``
    (``boxes.level_table``). Returns int32 ``[B, T, 4]``, equal to ``boxes.largest_box`` on
    the same maps. Raises :class:`MapRangeError` when a value lies outside [0, 1] or is NaN.
    Threads: as the FFI call (:func:`_threads`). Requires :func:`available`.
    """
    lib = library()

    def call(m, t, out, n, h, w, threads):
        return lib.infocam_largest_boxes_f32(_ptr(m), n, h, w, _ptr(t), t.shape[0], _ptr(out),
                                             threads)

    return _host_f32_call(call, "largest-box", maps, table, out_shape=(4,), out_dtype=np.int32)


def host_contour_iou(maps, table, gt_boxes, gt_valid):
    """Best contour IoUs at the thresholds' levels on the host: float32 ``[B, H, W]`` maps in
    [0, 1], int32 ``[T, 256]`` table, int32 ``[B, G, 4]`` GT boxes, bool ``[B, G]`` ->
    float32 ``[B, T]`` (as :func:`host_largest_box`; the per-level kernel is
    :func:`contour_iou`)."""
    lib = library()
    gt_boxes = np.ascontiguousarray(gt_boxes, np.int32)
    gt_valid = np.ascontiguousarray(gt_valid, np.bool_)

    def call(m, t, out, n, h, w, threads):
        return lib.infocam_contour_iou_f32(_ptr(m), _ptr(t), t.shape[0], _ptr(gt_boxes),
                                           _ptr(gt_valid), n, h, w, gt_boxes.shape[1],
                                           _ptr(out), threads)

    return _host_f32_call(call, "contour-IoU", maps, table, out_shape=(), out_dtype=np.float32)


# --------------------------------------------------------------------------------------------
# JAX calls
# --------------------------------------------------------------------------------------------
def _largest_shape(q):
    return jax.ShapeDtypeStruct(q.shape[:-2] + (NUM_LEVELS, 4), jnp.int32)


def _iou_shape(q):
    return jax.ShapeDtypeStruct(q.shape[:-2] + (NUM_LEVELS,), jnp.float32)


def _threads() -> np.int32:
    """Kernel threads per call: this process's CPUs shared among the local CPU devices (under
    pmap each device runs its own call)."""
    setting = host.env_threads()
    if setting:
        return np.int32(setting)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    devices = len(jax.local_devices(backend="cpu"))
    return np.int32(max(1, (cpus or 1) // max(1, devices)))


def _ffi_largest(q):
    return jax.ffi.ffi_call(_LARGEST, _largest_shape(q), vmap_method="broadcast_all")(
        q, threads=_threads())


def _ffi_iou(q, gt_boxes, gt_valid):
    return jax.ffi.ffi_call(_IOU, _iou_shape(q), vmap_method="broadcast_all")(
        q, gt_boxes, gt_valid, threads=_threads())


def _callback_largest(q):
    lib = library()
    return jax.pure_callback(lambda a: _host_largest(lib, a), _largest_shape(q), q,
                             vmap_method="broadcast_all")


def _callback_iou(q, gt_boxes, gt_valid):
    lib = library()
    return jax.pure_callback(lambda a, b, c: _host_iou(lib, a, b, c), _iou_shape(q), q,
                             gt_boxes, gt_valid, vmap_method="broadcast_all")


def _on_host_platform(host: bool | None) -> bool:
    return jax.default_backend() == "cpu" if host is None else host


def largest_boxes(q, *, ffi: bool | None = None):
    """Per-level largest boxes: uint8 ``[..., H, W]`` -> int32 ``[..., 256, 4]``.

    ``ffi``: True: ``ffi_call`` (CPU platform); False: host callback; None: by
    ``jax.default_backend()``. Requires :func:`available`.
    """
    if library() is None:
        raise RuntimeError(f"native box kernel unavailable: {unavailable_reason()}")
    q = jnp.asarray(q, jnp.uint8)
    return _ffi_largest(q) if _on_host_platform(ffi) else _callback_largest(q)


def contour_iou(q, gt_boxes, gt_valid, *, ffi: bool | None = None):
    """Per-level best contour IoU: uint8 ``[..., H, W]``, int32 ``[..., G, 4]``, bool
    ``[..., G]`` -> float32 ``[..., 256]`` (see the module docstring)."""
    if library() is None:
        raise RuntimeError(f"native box kernel unavailable: {unavailable_reason()}")
    q = jnp.asarray(q, jnp.uint8)
    gt_boxes = jnp.asarray(gt_boxes, jnp.int32)
    gt_valid = jnp.asarray(gt_valid, bool)
    if _on_host_platform(ffi):
        return _ffi_iou(q, gt_boxes, gt_valid)
    return _callback_iou(q, gt_boxes, gt_valid)


__all__ = ["MapRangeError", "available", "contour_iou", "host_contour_iou", "host_largest_box",
           "largest_boxes", "library", "library_path", "unavailable_reason"]
