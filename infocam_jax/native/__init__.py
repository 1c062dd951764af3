"""The compiled box kernel (``csrc/boxes_kernel.cc``) and the protocol pieces it shares.

``host``: its plain C entry points through ctypes (NumPy in, NumPy out, JAX never imported);
``ffi``: its XLA FFI handlers for jitted code; ``protocol``: the uint8 quantisation and threshold
table shared by the jitted path and the JAX-free score-map tool. This package imports nothing, so
the score-map tool starts without JAX.
"""
