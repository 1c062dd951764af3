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
TARGETS, DISPLAY = PKG + "targets.py", "infocam_jax/maps/display.py"
API_TEST = "tests/test_posthoc_api.py"
MUTANTS = [Mutant(name, source, old, new, (TEST,)) for name, source, old, new in [
    ("wrong gradient sign (cotangent -1)", CORE,
     "(grad,) = pullback(jnp.ones_like(score))", "(grad,) = pullback(-jnp.ones_like(score))"),
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
]] + [Mutant(name, source, old, new, (API_TEST,)) for name, source, old, new in [
    ("default target: the least likely class", TARGETS,
     "return jnp.argmax(logits, axis=-1).astype(jnp.int32)",
     "return jnp.argmin(logits, axis=-1).astype(jnp.int32)"),
    ("layer names: negative stage index not resolved", PKG + "layer_names.py",
     "if index < 0 and -index <= len(blocks):", "if False:"),
    ("scale_maps: no second min-max at the image size", DISPLAY,
     "return _min_max(jax.image.resize(", "return (jax.image.resize("),
    ("overlay: heat and image weights swapped", DISPLAY,
     "mixed = (1 - image_weight) * heat + image_weight * images",
     "mixed = image_weight * heat + (1 - image_weight) * images"),
]]


if __name__ == "__main__":
    sys.exit(main(MUTANTS))
