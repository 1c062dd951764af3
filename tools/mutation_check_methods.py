"""Mutation check of the method modules (methods/{has,cutmix,acol,spg}.py) and of the (backbone,
method) networks (models/{adl,network,vgg,resnet,convert}.py, checked by tests/test_method_parity.py
against the reference's fixtures): each mutant must make its tests fail.

    python tools/mutation_check_methods.py [index ...]

A mutant is (name, file, old text, new text, test file[, pytest -k expression]).

(the runner: tools/mutation_check.py).
"""
import sys

from mutation_check import Mutant, main

MUTANTS = [
  ("has: swap row/col cell index", "infocam_jax/methods/has.py",
   "pixel = hide[:, rows[:, None], cols[None, :]]", "pixel = hide[:, cols[None, :], rows[:, None]]", "tests/test_augment.py"),
  ("has: cell size off by one", "infocam_jax/methods/has.py",
   "rows = jnp.arange(h) // grid_size", "rows = jnp.arange(h) // (grid_size + 1)", "tests/test_augment.py"),
  ("cutmix: cut sizes from swapped axes", "infocam_jax/methods/cutmix.py",
   "cut_r = jnp.floor(height * cut_rat)", "cut_r = jnp.floor(width * cut_rat)", "tests/test_augment.py"),
  ("cutmix: centre row/col swapped", "infocam_jax/methods/cutmix.py",
   "r1 = jnp.clip(row - cut_r // 2, 0, height)", "r1 = jnp.clip(col - cut_r // 2, 0, height)", "tests/test_augment.py"),
  ("cutmix: clip to H-1 (off by one)", "infocam_jax/methods/cutmix.py",
   "r2 = jnp.clip(row + cut_r // 2, 0, height)", "r2 = jnp.clip(row + cut_r // 2, 0, height - 1)", "tests/test_augment.py"),
  ("cutmix: box end inclusive", "infocam_jax/methods/cutmix.py",
   "(rows >= r1) & (rows < r2)", "(rows >= r1) & (rows <= r2)", "tests/test_augment.py"),
  ("cutmix: lambda = lam0 (not recomputed from the clipped box)", "infocam_jax/methods/cutmix.py",
   "kept = (h * w - (r2 - r1) * (c2 - c1)).astype(jnp.float32)",
   "kept = h * w * draw.lam0", "tests/test_augment.py"),
  ("cutmix: round instead of int()", "infocam_jax/methods/cutmix.py",
   "cut_c = jnp.floor(width * cut_rat)", "cut_c = jnp.round(width * cut_rat)", "tests/test_augment.py"),
  ("cutmix loss: lam and 1-lam swapped", "infocam_jax/methods/cutmix.py",
   "return (lam * loss_fn(logits, batch)", "return ((1.0 - lam) * loss_fn(logits, batch)", "tests/test_augment.py"),
  ("cutmix: targets not permuted", "infocam_jax/methods/cutmix.py",
   "(v[perm] if k in TARGET_KEYS else v)", "(v if k in TARGET_KEYS else v)", "tests/test_augment.py"),
  ("step: HaS transform dropped", "infocam_jax/methods/has.py",
   "return dict(batch, image=images), None", "return batch, None", "tests/test_train_methods.py"),
  ("step: CutMix loss unmixed", "infocam_jax/methods/cutmix.py",
   "return cutmix_loss(loss_fn, base.main_logits(outputs), batch, perm, lam)",
   "return loss_fn(base.main_logits(outputs), batch)", "tests/test_train_methods.py"),
  ("step: HaS drawn from the ADL key", "infocam_jax/methods/has.py",
   "key = jax.random.fold_in(step_key, base.AUGMENT_STREAM)\n    images = hide_and_seek",
   "key = jax.random.fold_in(step_key, device_index)\n    images = hide_and_seek", "tests/test_train_methods.py"),
]
PARITY = "tests/test_method_parity.py"
MUTANTS += [
  ("acol: erase where attention < delta (mask inverted)", "infocam_jax/methods/acol.py",
   "keep = (attention < self.drop_threshold)", "keep = (attention >= self.drop_threshold)",
   PARITY, "vgg16_gap-acol"),
  ("acol: labels=None erases the argmin class", "infocam_jax/methods/acol.py",
   "labels = jnp.argmax(logits_a, axis=-1)", "labels = jnp.argmin(logits_a, axis=-1)",
   PARITY, "vgg16_gap-acol"),
  ("acol loss: branch B term dropped", "infocam_jax/methods/acol.py",
   "+ classification_loss(outputs.logits_b, labels, weights=weights))", "+ 0.0)",
   PARITY, "vgg16_gap-acol"),
  ("acol: VGG neck without the 3x3 average pool", "infocam_jax/models/vgg.py",
   "return avg_pool3_count_pad(x)", "return x", PARITY, "vgg16_gap-acol"),
  ("acol: VGG avg pool divides by 8", "infocam_jax/models/vgg.py",
   "return summed / jnp.array(9, x.dtype)", "return summed / jnp.array(8, x.dtype)",
   PARITY, "vgg16_gap-acol"),
  ("acol readout: branch B read with branch A's features", "infocam_jax/methods/acol.py",
   "base.Branch(outputs.features_b,", "base.Branch(outputs.features_a,", PARITY, "vgg16_gap-acol"),
  ("convert: classifier_A / classifier_B swapped", "infocam_jax/methods/acol.py",
   'for branch, name in (("A", "a"), ("B", "b")):', 'for branch, name in (("A", "b"), ("B", "a")):',
   PARITY, "vgg16_gap-acol"),
  ("spg: ResNet tap b1 after layer3_1", "infocam_jax/models/resnet.py",
   'taps={"spg_b1": "30", "spg_b2": "35"}', 'taps={"spg_b1": "31", "spg_b2": "35"}',
   PARITY, "resnet50-spg"),
  ("spg: ResNet tap b2 after layer3_4", "infocam_jax/models/resnet.py",
   'taps={"spg_b1": "30", "spg_b2": "35"}', 'taps={"spg_b1": "30", "spg_b2": "34"}',
   PARITY, "resnet50-spg"),
  ("spg: VGG tap b1 before pool4", "infocam_jax/models/vgg.py",
   '"4M" if opts.layout == "guidance" and not opts.large_feature_map else "43"', '"43"',
   PARITY, "vgg16_gap-spg"),
  ("spg: VGG pool4 2x2/2 instead of 3x3/2/1", "infocam_jax/models/vgg.py",
   'return ("M", "M", "M", None if large else "M1", None)',
   'return ("M", "M", "M", None if large else "M", None)', PARITY, "vgg16_gap-spg"),
  ("spg: mask thresholds of terms 1 and 2 swapped", "infocam_jax/methods/spg.py",
   "(h1, l1), (h2, l2), (h3, l3) = check_thresholds(thresholds)",
   "(h2, l2), (h1, l1), (h3, l3) = check_thresholds(thresholds)", PARITY, "vgg16_gap-spg"),
  ("spg: high / low swapped in the attention mask", "infocam_jax/methods/spg.py",
   "term(up_b2, outputs.attention, h1, l1)", "term(up_b2, outputs.attention, l1, h1)",
   PARITY, "vgg16_gap-spg"),
  ("spg: BCE ignores no pixel", "infocam_jax/methods/spg.py",
   "return jnp.where(bg, 0.0, 1.0).astype(jnp.float32), fg | bg",
   "return jnp.where(bg, 0.0, 1.0).astype(jnp.float32), jnp.ones_like(fg)", PARITY, "spg"),
  ("spg: background test <= instead of <", "infocam_jax/methods/spg.py",
   "bg = attention < low", "bg = attention <= low", PARITY, "spg"),
  ("spg: no fallback when fewer than 30 pixels pass", "infocam_jax/methods/spg.py",
   "fg = jnp.where(few, attention > FALLBACK_FRACTION * peak, fg)", "fg = fg", PARITY, "spg"),
  ("spg: B1's target from sigma(B1) instead of sigma(B2)", "infocam_jax/methods/spg.py",
   "term(up_b1, jax.nn.sigmoid(up_b2), h2, l2)", "term(up_b1, jax.nn.sigmoid(up_b1), h2, l2)",
   PARITY, "spg"),
  ("spg: fused attention from B1 twice", "infocam_jax/methods/spg.py",
   "+ jax.nn.sigmoid(resize_bilinear(logits_b2, image_size))) / 2",
   "+ jax.nn.sigmoid(resize_bilinear(logits_b1, image_size))) / 2", PARITY, "spg"),
  ("spg: bilinear with align_corners=True", "infocam_jax/methods/spg.py",
   "src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5",
   "src = np.arange(out_size, dtype=np.float64) * ((in_size - 1) / max(out_size - 1, 1))",
   PARITY, "vgg16_gap-spg"),
  ("spg: attention at the input size (spg_attention_size ignored)", "infocam_jax/models/network.py",
   "head.attention_size or images.shape[1:3]", "images.shape[1:3]", PARITY, "vgg16_gap-spg"),
  ("spg loss: the three BCE terms dropped", "infocam_jax/methods/spg.py",
   "return sum(spg_loss_terms(outputs, labels, weights, thresholds, classification_loss))",
   "return classification_loss(outputs.logits, labels, weights=weights)", PARITY, "vgg16_gap-spg"),
  ("convert: SPG_B_shared.2 and SPG_C.2 swapped", "infocam_jax/methods/spg.py",
   'conv(table, "SPG_B_shared.2", ("spg", "shared_out"))', 'conv(table, "SPG_B_shared.2", ("spg", "c_out"))',
   PARITY, "vgg16_gap-spg"),
  ("adl: VGG ADL after pool4 instead of conv4_3", "infocam_jax/models/vgg.py",
   'adl_default="3M 43 53"', 'adl_default="3M 4M 53"', PARITY, "vgg16_gap-adl"),
  ("adl: ResNet ADL after layer4_1 instead of layer4_2", "infocam_jax/models/resnet.py",
   'adl_default="30 40 42"', 'adl_default="30 40 41"', PARITY, "resnet50-adl"),
  ("adl: drop mask inverted", "infocam_jax/models/adl.py",
   "drop_mask = (attention < self.gamma * peak)", "drop_mask = (attention >= self.gamma * peak)",
   PARITY, "vgg16_gap-adl"),
  ("adl: peak over the whole batch", "infocam_jax/models/adl.py",
   "peak = jnp.max(attention, axis=(1, 2, 3), keepdims=True)",
   "peak = jnp.max(attention, axis=(0, 1, 2, 3), keepdims=True)", PARITY, "vgg16_gap-adl"),
  ("adl: drop mask and importance map swapped", "infocam_jax/models/adl.py",
   "selected = jnp.where(use_drop, drop_mask, importance)",
   "selected = jnp.where(use_drop, importance, drop_mask)", PARITY, "vgg16_gap-adl"),
  ("resnet: large_feature_map keeps layer3 stride 2", "infocam_jax/models/resnet.py",
   "RESNET50_STRIDES_LARGE = (1, 2, 1, 1)", "RESNET50_STRIDES_LARGE = (1, 2, 2, 1)",
   PARITY, "resnet50-cam"),
]

# The production readout of the eval step (backends.forward_readout ->
# forward.readout_class_maps -> cams.fuse) against the reference's return_cam maps
# (test_production_cam_equals_reference). A swapped branch order is not a mutant of ACoL's
# fusion: the elementwise max is symmetric in the branches.
PRODUCTION = "production_cam and acol"
MUTANTS += [
  ("production fusion: ACoL max -> mean of the min-max maps", "infocam_jax/maps/cams.py",
   "return jnp.max(jnp.stack([_minmax_hw(m) for m in branch_maps]), axis=0)",
   "return jnp.mean(jnp.stack([_minmax_hw(m) for m in branch_maps]), axis=0)",
   PARITY, PRODUCTION),
  ("production fusion: ACoL branches not min-max normalised", "infocam_jax/maps/cams.py",
   "return jnp.max(jnp.stack([_minmax_hw(m) for m in branch_maps]), axis=0)",
   "return jnp.max(jnp.stack(branch_maps), axis=0)", PARITY, PRODUCTION),
  ("production readout: ACoL fuses branch A only", "infocam_jax/evaluation/forward.py",
   'branches = readout.branches[:1] if readout.fusion == "single" else readout.branches',
   'branches = readout.branches[:1]', PARITY, PRODUCTION),
  ("production readout: ACoL branch B read with branch A's features",
   "infocam_jax/methods/acol.py",
   "base.Branch(outputs.features_b,", "base.Branch(outputs.features_a,", PARITY, PRODUCTION),
  ("production forward: ACoL erases its top-1 class, not the label",
   "infocam_jax/evaluation/backends.py",
   'kwargs = {"labels": labels} if method.reads_labels else {}', "kwargs = {}",
   PARITY, PRODUCTION),
  ("production CAM: the class map negated (single-branch methods)",
   "infocam_jax/maps/cams.py",
   "    cam_map = _weighted_map(features, own)\n",
   "    cam_map = -_weighted_map(features, own)\n", PARITY, "production_cam and not acol"),
]


def _tests(test: str, kexpr: str = "") -> tuple:
    """pytest arguments of a row: its test file and -k expression (the train-step mutants run
    the step and HaS tests of tests/test_train_methods.py)."""
    kexpr = kexpr or ("step or has_" if "train_methods" in test else "")
    return (test, "-k", kexpr) if kexpr else (test,)


if __name__ == "__main__":
    sys.exit(main([Mutant(name, path, old, new, _tests(test, *kexpr))
                   for name, path, old, new, test, *kexpr in MUTANTS]))
