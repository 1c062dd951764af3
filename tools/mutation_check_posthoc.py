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
SECOND_ORDER, FULLGRAD = PKG + "second_order.py", PKG + "fullgrad.py"
TEST = "tests/test_posthoc.py"
ZOO = "tests/test_posthoc_gradient_zoo.py"
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

# The maps of issue 29 (tests/test_posthoc_gradient_zoo.py, a -k selection each).
MUTANTS += [Mutant(name, source, old, new, (ZOO, "-k", select)) for name, source, old, new, select in [
    ("eigen_smooth: projection of A, not of W ⊙ A", CORE,
     "maps = first_component_projection(weights * activations)",
     "maps = first_component_projection(activations)", "eigen_smooth"),
    ("objective's cotangent doubled", CORE,
     "score = objective(logits)", "score = 2 * objective(logits)", "finercam"),
    ("Grad-CAM element-wise: products not rectified", GRADIENT,
     "return jnp.where(g * a <= 0, 0.0, g)", "return g", "elementwise or gradcamew"),
    ("Seg-Eigen-CAM: signed gradient", GRADIENT, "    return jnp.abs(g)\n", "    return g\n",
     "segeigencam"),
    ("Seg-Eigen-CAM: no sign correction", GRADIENT,
     "return jnp.where(flip[:, None, None], -proj, proj)", "return proj",
     "segeigencam or sign_rule"),
    ("Eigen-Grad-CAM: channel sum instead of the projection", GRADIENT,
     "layer, relu,\n                             eigen_smooth=True)\n\n\n@registry.register(\"segeigencam\"",
     "layer, relu,\n                             eigen_smooth=False)\n\n\n@registry.register(\"segeigencam\"",
     "eigengradcam"),
    ("FinerCAM: comparison weights not the softmax", GRADIENT,
     "p = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), others, axis=-1)",
     "p = jnp.ones(others.shape)", "finer"),
    ("FinerCAM: alpha dropped", GRADIENT, "(y_t - alpha * y_j)", "(y_t - y_j)", "finer"),
    ("FinerCAM: ranks off by one", GRADIENT, "others = order[:, jnp.asarray(ranks)]",
     "others = order[:, jnp.asarray(ranks) - 1]", "finer"),
    ("Smooth Grad-CAM++: gradient not rectified", GRADIENT,
     "jnp.sum(alpha * jnp.maximum(g_last, 0.0), axis=(1, 2))", "jnp.sum(alpha * g_last, axis=(1, 2))",
     "smooth"),
    ("Smooth Grad-CAM++: D3 is the mean of G²", GRADIENT, "d3 = jnp.mean(g * g * g, axis=0)",
     "d3 = jnp.mean(g * g, axis=0)", "smooth"),
    ("Smooth Grad-CAM++: map of the clean activations", GRADIENT,
     "return core.weighted_sum(weights, a_noisy[-images.shape[0]:], relu)",
     "return core.weighted_sum(weights, a, relu)", "smoothgradcampp"),
    ("KPCA: no sign rule", ACTIVATION, "u = u * jnp.where(pivot < 0, -1.0, 1.0)", "u = u", "kpca or kernel"),
    ("KPCA: sqrt(lambda) dropped", ACTIVATION,
     "return (u * jnp.sqrt(jnp.maximum(values[..., -1:], 0.0))).reshape(b, h, w)",
     "return u.reshape(b, h, w)", "kpca or kernel"),
    ("KPCA: sigmoid without coef0", ACTIVATION, "return jnp.tanh(gamma * dot + KPCA_COEF0)",
     "return jnp.tanh(gamma * dot)", "kpca or kernel"),
    ("KPCA: kernel not centred", ACTIVATION,
     "gram = (gram - jnp.mean(gram, axis=1, keepdims=True)", "gram = (gram - 0", "kpca or kernel"),
    ("FEM: variance instead of std", ACTIVATION, "std = jnp.std(activation", "std = jnp.var(activation",
     "fem"),
    ("RandomCAM: U(0, 1)", ACTIVATION, "jnp.float32, -1.0, 1.0)", "jnp.float32, 0.0, 1.0)", "random"),
    ("ShapleyCAM: Hessian term dropped", SECOND_ORDER,
     "return jnp.mean(g - 0.5 * hvp, axis=(1, 2))", "return jnp.mean(g, axis=(1, 2))", "shapley"),
    ("ShapleyCAM: tangent 2A", SECOND_ORDER,
     "tangent = jnp.mean(a, axis=(1, 2)) if layer == DEFAULT_LAYER else a",
     "tangent = jnp.mean(a, axis=(1, 2)) if layer == DEFAULT_LAYER else 2 * a", "shapley"),
    ("FullGrad: BatchNorm bias not folded", FULLGRAD,
     "return params[\"bias\"] - stats[\"mean\"] * scale / jnp.sqrt(stats[\"var\"] + module.epsilon)",
     "return params[\"bias\"]", "fullgrad or folded"),
    ("FullGrad: input term dropped", FULLGRAD, "maps = input_term + sum(bias_terms.values())",
     "maps = sum(bias_terms.values())", "fullgrad"),
    ("FullGrad: bias gradients not absolute", FULLGRAD,
     "jnp.abs(grad.astype(jnp.float32) * biases[path])", "grad.astype(jnp.float32) * biases[path]",
     "fullgrad"),
    ("FullGrad: nearest resize", FULLGRAD, 'method="linear")', 'method="nearest")', "fullgrad"),
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
