"""Build of the compiled box kernel: csrc/boxes_kernel.cc -> infocam_jax/native/_boxes_native*.so.

Everything else about the package is in pyproject.toml. The kernel is an XLA FFI handler: its
headers come from jaxlib (``jax.ffi.include_dir()``), pinned in pyproject's build requirements to
the oldest jaxlib the package supports (newer jaxlibs accept handlers built against older FFI
headers). ``pip install -e .`` builds it in place next to the Python sources. Without a working
C++ compiler the install still succeeds with a warning, and infocam_jax.boxes uses its pure-JAX
box pass (see infocam_jax/native/ffi.py).
"""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that adds the FFI include directory and never fails the install."""

    def build_extension(self, ext):
        try:
            import jax.ffi

            # -isystem: no warnings from the XLA headers themselves.
            ext.extra_compile_args = ["-isystem", jax.ffi.include_dir(), *ext.extra_compile_args]
            super().build_extension(ext)
        except Exception as err:  # noqa: BLE001 (a missing compiler must not fail the install)
            self.warn(f"could not build the native box kernel ({err}); infocam_jax will use "
                      "its pure-JAX box pass (slower on CPU)")


setup(
    ext_modules=[Extension(
        "infocam_jax.native._boxes_native",
        sources=["csrc/boxes_kernel.cc"],
        language="c++",
        extra_compile_args=["-std=c++17", "-O3", "-pthread"],
        extra_link_args=["-pthread"],
        optional=True,  # a failed build leaves no file, and nothing copies the missing one
    )],
    cmdclass={"build_ext": OptionalBuildExt},
)
