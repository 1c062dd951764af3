"""Mutation check of the post-hoc maps (infocam_jax/maps/posthoc/): each mutant must make tests/test_posthoc.py fail.

    python tools/mutation_check_posthoc.py [index ...]

(the runner: tools/mutation_check.py).
"""
import sys

from mutation_check import Mutant, main

PKG = "infocam_jax/maps/posthoc/"
CORE, GRADIENT, PERTURBATION, ACTIVATION = (PKG + m + ".py" for m in (
    "core", "gradient", "perturbation", "activation"))
TEST = "tests/test_posthoc.py"
MUTANTS = [Mutant(name, source, old, new, (TEST,)) for name, source, old, new in [
    ("wrong gradient sign (cotangent -one_hot)", CORE,
     "cotangent = nan_where_invalid(jax.nn.one_hot(",
     "cotangent = nan_where_invalid(-jax.nn.one_hot("),
    ("missing final ReLU", CORE, "return jnp.maximum(maps, 0.0) if relu else maps", "return maps"),
    ("wrong layer (always the GAP input)", CORE,
     "activation = features if layer == DEFAULT_LAYER else seen[0]", "activation = features"),
    ("Grad-CAM: sum instead of mean over h, w", GRADIENT, "return jnp.mean(g, axis=(1, 2))",
     "return jnp.sum(g, axis=(1, 2))"),
    ("Grad-CAM++: gradient not rectified", GRADIENT,
     "return jnp.sum(jnp.maximum(g, 0.0) * alpha, axis=(1, 2))",
     "return jnp.sum(g * alpha, axis=(1, 2))"),
    ("LayerCAM: gradient not rectified", GRADIENT, "    return jnp.maximum(g, 0.0)\n", "    return g\n"),
    ("XGrad-CAM: activation normaliser dropped", GRADIENT,
     "return jnp.sum(g * a / (s + XGRADCAM_EPS), axis=(1, 2))",
     "return jnp.sum(g * a, axis=(1, 2))"),
    ("Score-CAM: masks not min-max normalised", PERTURBATION, "masks = (up - lo) / (hi - lo + SCORECAM_EPS)",
     "masks = up"),
    ("Score-CAM: weights are the raw scores, no softmax", PERTURBATION,
     "weights = core.nan_where_invalid(jax.nn.softmax(scores, axis=-1), targets, num_classes)",
     "weights = core.nan_where_invalid(scores, targets, num_classes)"),
    ("Eigen-CAM: activations not centred", CORE, "x = x - jnp.mean(x, axis=1, keepdims=True)",
     "x = x"),
]]


if __name__ == "__main__":
    sys.exit(main(MUTANTS))
