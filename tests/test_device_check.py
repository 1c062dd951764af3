"""benchmarks/device_check.py: the smoke run on CPU, with the modules the GPU machine lacks
blocked (ml_collections, grain, tensorflow_datasets, array_record, tensorboardX, tensorflow)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "device_check.py"
BLOCKED = ("ml_collections", "grain", "tensorflow_datasets", "array_record", "tensorboardX",
           "tensorflow")

# `None` in sys.modules is how an absent module looks: `import x` raises ModuleNotFoundError
# and `importlib.util.find_spec("x")` returns None (libraries probing optional modules, as torch
# does for tensorflow, then carry on as on a machine without them).
_BLOCKER = textwrap.dedent(f"""
    import sys

    BLOCKED = {BLOCKED!r}
    for _name in BLOCKED:
        sys.modules[_name] = None
""")


def _run(code: str, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _BLOCKER + code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_core_modules_import_without_the_missing_packages():
    proc = _run(textwrap.dedent("""
        import infocam_jax.models, infocam_jax.maps.cams, infocam_jax.boxes, infocam_jax.metrics
        import infocam_jax.losses, infocam_jax.train.state
        print(sorted(m for m, mod in sys.modules.items()
                     if m.split(".")[0] in BLOCKED and mod is not None))
        """), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_blocker_blocks():
    proc = _run("import ml_collections", timeout=60)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    # A generous budget: on a loaded machine the smoke run must still reach every measurement.
    proc = _run(textwrap.dedent(f"""
        import runpy
        sys.argv = ["device_check.py", "--out={out}", "--smoke", "--budget_s=600"]
        runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
        """), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out, json.loads((out / "device_check.json").read_text())


def test_smoke_writes_every_measurement(smoke):
    out, data = smoke
    assert data["errors"] == [] and data["skipped"] == []
    assert data["args"]["smoke"] is True
    for key in ("jax", "jaxlib", "device_kind", "platform", "device_count", "box_backends"):
        assert key in data["env"], key
    assert data["env"]["platform"] == "cpu"
    kinds = {(r["kind"], r["conv_impl"]) for r in data["models"]}
    assert kinds == {("train", None), ("forward", None), ("train", "xla")}
    for row in data["models"]:
        assert row["jax"]["images_per_s"] > 0 and row["jax"]["compile_s"] > 0
        assert row["jax"]["xla_bytes"] > 0
    has_torch = importlib.util.find_spec("torch") is not None
    assert all(("torch" in r) == (has_torch and r["conv_impl"] is None)
               for r in data["models"])
    assert data["eval"] and all(r["images_per_s"] > 0 for r in data["eval"])
    assert {r["backend"] for r in data["eval"]} <= set(data["env"]["box_backends"]) | {"default"}
    assert [r["backend"] for r in data["boxes"]] == data["env"]["box_backends"]
    assert all(r["images_per_s"] > 0 for r in data["boxes"])
    assert [r["method"] for r in data["posthoc"]] == ["gradcam", "scorecam"]
    assert all(r["images_per_s"] > 0 and r["xla_bytes"] > 0 for r in data["posthoc"])
    md = (out / "device_check.md").read_text()
    assert "| vgg16_gap | bfloat16 | 2 | train |" in md and "SMOKE RUN" in md
    assert "Full eval step" in md and "Box extraction" in md and "Post-hoc maps" in md


def test_budget_skips_and_lists_the_rest(tmp_path):
    """A zero budget measures nothing and lists every planned measurement as skipped."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import device_check  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.remove(str(SCRIPT.parent))
    args = device_check.parse_args([f"--out={tmp_path}", "--smoke", "--budget_s=0",
                                    "--no_torch"])
    planned = device_check.plan(args)
    data = device_check.main([f"--out={tmp_path}", "--smoke", "--budget_s=0", "--no_torch"])
    assert len(data["skipped"]) == len(planned)
    assert data["models"] == [] and data["eval"] == []
    assert (tmp_path / "device_check.md").exists()
