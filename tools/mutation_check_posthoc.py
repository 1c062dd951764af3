"""Mutation check of the post-hoc maps (infocam_jax/maps/posthoc/): each mutant must make tests/test_posthoc.py
(or, for the perturbation / guided / factorisation maps, tests/test_posthoc_perturbation_zoo.py) fail.

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

# Perturbation / guided / factorisation maps and aug_smooth (tests/test_posthoc_perturbation_zoo.py).
AUGMENT, GUIDED, FACTORIZATION = (PKG + m + ".py" for m in ("augment", "guided", "factorization"))
ZOO = "tests/test_posthoc_perturbation_zoo.py"
MUTANTS += [Mutant(name, source, old, new, (ZOO, "-k", tests)) for name, source, old, new, tests in [
    ("Ablation-CAM: weights y - y_k, not divided by y", PERTURBATION,
     "weights = core.nan_where_invalid((y - scores) / y, targets, num_classes)",
     "weights = core.nan_where_invalid(y - scores, targets, num_classes)", "ablation"),
    ("Ablation-CAM: ablated value min(A), not min(A) - 1e7", PERTURBATION,
     "return jnp.where(lo == 0, 0.0, lo - ABLATION_VALUE)", "return jnp.where(lo == 0, 0.0, lo)",
     "ablation"),
    ("Ablation-CAM: the next channel ablated", PERTURBATION,
     "ablate = jnp.tile(jax.nn.one_hot(channels, k, dtype=bool)",
     "ablate = jnp.tile(jax.nn.one_hot(channels + 1, k, dtype=bool)", "ablation"),
    ("SS-CAM: no noise", PERTURBATION,
     "return up + sscam_noise(key, i, channels, up.shape[:3], std)", "return up", "sscam"),
    ("IS-CAM: coefficient i(i-1)/2N (torch-cam's docstring), not its code's i(i+1)/2N",
     PERTURBATION, "return up * ((i + 1) * (i + 2) / (2.0 * num_samples))",
     "return up * ((i + 1) * i / (2.0 * num_samples))", "iscam"),
    ("torch-cam masks: not min-max normalised", PERTURBATION,
     "normed = shifted / (jnp.max(shifted, axis=(1, 2), keepdims=True) + TORCHCAM_EPS)",
     "normed = shifted", "iscam_statement"),
    ("SS-CAM / IS-CAM: sum over samples, not mean", PERTURBATION,
     "return jnp.mean(lax.map(one_sample, jnp.arange(num_samples)), axis=0)",
     "return jnp.sum(lax.map(one_sample, jnp.arange(num_samples)), axis=0)", "iscam_statement"),
    ("aug_smooth: flipped views not flipped back", AUGMENT,
     "maps = jnp.stack([maps[0], jnp.flip(maps[1], axis=3)])",
     "maps = jnp.stack([maps[0], maps[1]])", "aug_smooth_is"),
    ("aug_smooth: no brightness factors", AUGMENT, "FACTORS = (0.9, 1.0, 1.1)",
     "FACTORS = (1.0, 1.0, 1.0)", "aug_smooth_is"),
    ("guided ReLU: negative gradients pass", GUIDED,
     "jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g))", "jnp.where(x > 0, g, jnp.zeros_like(g))",
     "guided_relu_rule or guided_gradcam_statement"),
    ("NMF: coordinate step not clipped at 0", FACTORIZATION,
     "step = jnp.maximum(w[:, t] - grad / jnp.where(hess != 0, hess, 1.0), 0.0)",
     "step = w[:, t] - grad / jnp.where(hess != 0, hess, 1.0)", "nmf"),
    ("DFF: channel offsets not added back to the concepts", FACTORIZATION,
     "return factors + offset[:, None], maps", "return factors, maps", "dff_parity and vgg"),
]]


if __name__ == "__main__":
    sys.exit(main(MUTANTS))
