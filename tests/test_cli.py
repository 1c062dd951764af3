"""The console commands: every ``[project.scripts]`` entry of pyproject.toml resolves to a
callable of ``infocam_jax.cli``, and ``launch/*.py`` are wrappers of the same functions."""
import ast
import os
import pathlib
import subprocess
import sys
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = ("infocam-train", "infocam-evaluate", "infocam-scoremaps", "infocam-reproduce",
            "infocam-visualize", "infocam-convert-weights", "infocam-evaluate-readings")


def _scripts():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_is_declared():
    scripts = _scripts()
    assert set(COMMANDS) <= set(scripts)
    for target in scripts.values():
        assert target.startswith("infocam_jax.cli.") and ":" in target


def test_every_entry_point_resolves_to_a_callable():
    # One process per command: absl commands define their flags at import.
    code = ("import importlib, sys; m, f = sys.argv[1].split(':'); "
            "fn = getattr(importlib.import_module(m), f); assert callable(fn), fn; "
            "print('jax' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    procs = {name: subprocess.Popen([sys.executable, "-c", code, target], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, target in _scripts().items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {err[-2000:]}"
        if name == "infocam-scoremaps":
            assert out.strip() == "False", "infocam-scoremaps must not import JAX"


def test_launchers_are_wrappers_of_the_commands():
    targets = {t.split(":")[0].rsplit(".", 1)[1] for t in _scripts().values()}
    for path in sorted((REPO / "launch").glob("*.py")):
        tree = ast.parse(path.read_text())
        imports = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        cli = [m for m in imports if m and m.startswith("infocam_jax.cli.")]
        assert len(cli) == 1 and cli[0].rsplit(".", 1)[1] in targets, path.name
        assert "sys.path" not in path.read_text(), path.name
