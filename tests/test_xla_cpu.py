"""xla_cpu.use_eigen_convolutions: when it sets XLA_FLAGS and when it leaves them alone."""
import pytest

from infocam_jax import xla_cpu

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
    import jax  # pylint: disable=import-outside-toplevel
    jax.numpy.zeros(1).block_until_ready()
    assert xla_cpu._backend_started()  # pylint: disable=protected-access
