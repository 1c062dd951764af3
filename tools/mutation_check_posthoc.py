"""Mutation check of posthoc.py: each mutant must make tests/test_posthoc.py fail.

    python tools/mutation_check_posthoc.py [index ...]

Each mutant is written into the source, the test file runs (``-x``: it stops at the first
failure), and the source is restored, even on failure. Prints KILLED (the tests failed, good)
or SURVIVED per mutant, with the first failing test.
"""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCE = "infocam_jax/posthoc.py"
TEST = "tests/test_posthoc.py"
MUTANTS = [
    ("wrong gradient sign (cotangent -one_hot)",
     "cotangent = _nan_where_invalid(jax.nn.one_hot(",
     "cotangent = _nan_where_invalid(-jax.nn.one_hot("),
    ("missing final ReLU", "return jnp.maximum(maps, 0.0) if relu else maps", "return maps"),
    ("wrong layer (always the GAP input)",
     "activation = features if layer == DEFAULT_LAYER else seen[0]", "activation = features"),
    ("Grad-CAM: sum instead of mean over h, w", "return jnp.mean(g, axis=(1, 2))",
     "return jnp.sum(g, axis=(1, 2))"),
    ("Grad-CAM++: gradient not rectified",
     "return jnp.sum(jnp.maximum(g, 0.0) * alpha, axis=(1, 2))",
     "return jnp.sum(g * alpha, axis=(1, 2))"),
    ("LayerCAM: gradient not rectified", "    return jnp.maximum(g, 0.0)\n", "    return g\n"),
    ("XGrad-CAM: activation normaliser dropped",
     "return jnp.sum(g * a / (s + XGRADCAM_EPS), axis=(1, 2))",
     "return jnp.sum(g * a, axis=(1, 2))"),
    ("Score-CAM: masks not min-max normalised", "masks = (up - lo) / (hi - lo + SCORECAM_EPS)",
     "masks = up"),
    ("Score-CAM: weights are the raw scores, no softmax",
     "weights = _nan_where_invalid(jax.nn.softmax(scores, axis=-1), targets, num_classes)",
     "weights = _nan_where_invalid(scores, targets, num_classes)"),
    ("Eigen-CAM: activations not centred", "x = x - jnp.mean(x, axis=1, keepdims=True)",
     "x = x"),
]


def run(index: int, name: str, old: str, new: str) -> bool:
    """Applies one mutant, runs the tests, restores the source; True if the mutant was killed."""
    path = REPO / SOURCE
    src = path.read_text()
    if src.count(old) != 1:
        raise SystemExit(f"[{index}] {name}: the original text occurs {src.count(old)} times "
                         f"in {SOURCE} (expected once); update the mutant")
    path.write_text(src.replace(old, new))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", TEST],
            cwd=REPO, capture_output=True, text=True, check=False,
            env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
    finally:
        path.write_text(src)
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    failed = [l for l in lines if l.startswith("FAILED")]
    killed = proc.returncode != 0
    print(f"[{index}] {name}: {'KILLED' if killed else 'SURVIVED'} | {lines[-1] if lines else ''}"
          f" | {failed[0] if failed else ''}", flush=True)
    return killed


def main(selection) -> int:
    survivors = [i for i, m in enumerate(MUTANTS)
                 if (not selection or str(i) in selection) and not run(i, *m)]
    print(f"{len(survivors)} survived: {survivors}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
