"""xla_cpu.use_eigen_convolutions: when it sets XLA_FLAGS and when it leaves them alone."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax.models import xla_cpu
from infocam_jax.models import layers

FLAG = xla_cpu.EIGEN_CONVOLUTIONS_FLAG


@pytest.fixture
def backend_not_started(monkeypatch):
    monkeypatch.setattr(xla_cpu, "_backend_started", lambda: False)


@pytest.mark.parametrize("flags,want", [
    (None, FLAG),
    ("", FLAG),
    ("--xla_force_host_platform_device_count=2",
     f"--xla_force_host_platform_device_count=2 {FLAG}"),
])
def test_adds_the_flag_to_other_flags(backend_not_started, flags, want):
    del backend_not_started
    environ = {} if flags is None else {"XLA_FLAGS": flags}
    assert xla_cpu.use_eigen_convolutions(environ)
    assert environ["XLA_FLAGS"] == want
    # A second call sees its own flag and changes nothing.
    assert not xla_cpu.use_eigen_convolutions(environ)
    assert environ["XLA_FLAGS"] == want


@pytest.mark.parametrize("environ", [
    {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"},
    {xla_cpu.CHOICE_ENV: "ynn"},
    {xla_cpu.CHOICE_ENV: " YNN ", "XLA_FLAGS": "--xla_cpu_use_onednn=true"},
])
def test_the_callers_choice_wins(backend_not_started, environ):
    del backend_not_started
    before = dict(environ)
    assert not xla_cpu.use_eigen_convolutions(environ)
    assert environ == before


def test_bad_choice_is_named(backend_not_started):
    del backend_not_started
    with pytest.raises(ValueError, match="INFOCAM_CPU_CONVOLUTIONS.*'onednn'"):
        xla_cpu.use_eigen_convolutions({xla_cpu.CHOICE_ENV: "onednn"})


def test_started_backend_warns_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(xla_cpu, "_backend_started", lambda: True)
    warnings = []
    monkeypatch.setattr(xla_cpu.logging, "warning", lambda msg, *a: warnings.append(msg % a))
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert not xla_cpu.use_eigen_convolutions(environ)
    assert environ == {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert warnings and "already started" in warnings[0]


def test_backend_started_reads_jax():
    jnp.zeros(1).block_until_ready()
    assert xla_cpu._backend_started()  # pylint: disable=protected-access


def test_eigen_convolutions_active_reads_the_flag():
    assert xla_cpu.eigen_convolutions_active({"XLA_FLAGS": f"--a=1 {FLAG}"})
    assert not xla_cpu.eigen_convolutions_active({"XLA_FLAGS": "--a=1"})
    assert not xla_cpu.eigen_convolutions_active({})


@pytest.mark.parametrize("k,stride,dtype,want", [
    (3, 1, "float32", True), (7, 2, "float32", True), (1, 1, "float32", False),
    (3, 1, "bfloat16", False)])
def test_kernel_gradient_route_under_eigen(monkeypatch, k, stride, dtype, want):
    """Under the Eigen flag, k x k float32 kernel gradients come from XLA's convolution (1x1
    and bfloat16 keep the matmul); every route equals plain autodiff."""
    monkeypatch.setenv("XLA_FLAGS", FLAG)
    rng = np.random.default_rng(k)
    x = jnp.asarray(rng.standard_normal((2, 12, 12, 4)), dtype)
    kernel = jnp.asarray(rng.standard_normal((k, k, 4, 6)) * 0.2, dtype)
    assert layers._xla_kernel_grad(kernel) == want  # pylint: disable=protected-access

    def grads(impl):
        loss = lambda x, w: jnp.sum(jnp.sin(layers.conv2d(x, w, stride, k // 2, impl).astype(
            jnp.float32)))
        return jax.grad(loss, argnums=(0, 1))(x, kernel)

    tol = 1e-5 if dtype == "float32" else 5e-2
    for got, ref in zip(grads("explicit"), grads("xla")):
        assert got.dtype == ref.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref, np.float32),
                                   rtol=tol, atol=tol * float(np.abs(np.asarray(ref, np.float32)).max()))
