"""Mutation check of posthoc.py: each mutant must make tests/test_posthoc.py fail.

    python tools/mutation_check_posthoc.py [index ...]

(the runner: tools/mutation_check.py).
"""
import sys

from mutation_check import Mutant, main

SOURCE = "infocam_jax/maps/posthoc.py"
TEST = "tests/test_posthoc.py"
MUTANTS = [Mutant(name, SOURCE, old, new, (TEST,)) for name, old, new in [
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
]]


if __name__ == "__main__":
    sys.exit(main(MUTANTS))
