"""Test helper (not a test module): run a script on two simulated CPU devices in a subprocess.

XLA_FLAGS must be set before JAX is imported, so the multi-device evaluation tests
(test_evaluate, test_eval_posthoc, test_eval_methods) run their two-device half in a fresh
interpreter; this is the one copy of that set-up.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
MARKER = "RESULTS"


def run_json(body: str, timeout: int = 300):
    """Runs ``body`` (dedented Python that prints ``RESULTS`` + JSON) on 2 CPU devices.

    The script starts with ``tests/`` on ``sys.path`` (so ``import test_evaluate as t`` works)
    and asserts ``jax.local_device_count() == 2`` before ``body``.

    Returns:
      The JSON value printed last after ``RESULTS`` (decoded).
    """
    script = (f"import json, sys\nsys.path.insert(0, {str(TESTS)!r})\nimport jax\n"
              "assert jax.local_device_count() == 2, jax.devices()\n" + textwrap.dedent(body))
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith(MARKER)][-1]
    return json.loads(line[len(MARKER):])
