"""Threshold selection on validation (infocam_jax.evaluation.thresholds) and the readings table.

``select`` is checked against a plain NumPy statement; the curves the eval step counts are
checked against per-image IoUs of the same score maps (single-label) and against a loop over
(image, present digit) pairs with ``boxes.largest_box`` + ``metrics.iou`` (multi-label).
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import boxes, metrics
from infocam_jax.evaluation import driver, forward, step, thresholds
from infocam_jax.experiments import readings_table, seed_tables
from infocam_jax.evaluation.settings import EvalSettings

import test_evaluate as te  # noqa: E402  (shared tiny models and data)


def numpy_select(t, v, s):
    """The statement: first maximiser of the validation curve, test value there."""
    i = np.flatnonzero(v == np.nanmax(v))[0]
    j = np.flatnonzero(s == np.nanmax(s))[0]
    return {"threshold": t[i], "validation": v[i], "test": s[i], "best_test": s[j],
            "best_threshold": t[j]}


class TestSelect:

    @pytest.mark.parametrize("seed", range(4))
    @pytest.mark.parametrize("levels", [5, 1000], ids=["ties", "no_ties"])
    def test_matches_numpy(self, seed, levels):
        rng = np.random.default_rng(seed)
        t = np.arange(0, 1, 0.01)
        v = rng.integers(0, levels, t.size) / levels
        s = rng.integers(0, levels, t.size) / levels
        assert thresholds.select(t, v, s) == pytest.approx(numpy_select(t, v, s))

    def test_nan_entries_are_skipped_and_all_nan_gives_nan(self):
        t = np.array([0.1, 0.2, 0.3])
        out = thresholds.select(t, [np.nan, 0.5, 0.4], [0.9, 0.1, 0.2])
        assert out["threshold"] == 0.2 and out["test"] == 0.1
        assert out["best_test"] == 0.9 and out["best_threshold"] == 0.1
        nan = thresholds.select(t, [np.nan] * 3, [np.nan] * 3)
        assert all(np.isnan(v) for v in nan.values())

    def test_bad_shapes_raise(self):
        with pytest.raises(ValueError, match="one shape"):
            thresholds.select([0.1, 0.2], [0.5], [0.5, 0.6])


@pytest.fixture(scope="module")
def single():
    model, data = te.TinyNet(te.NUM_CLASSES), te.make_data(12)
    variables = te.tiny_variables(model)
    settings = EvalSettings.from_config(te.make_config())
    batches = te.split_batches(data, 8)
    counts = driver.evaluate_counts(settings, model, variables, batches, num_devices=1)
    return model, variables, data, settings, counts


def test_single_label_curves_match_numpy(single):
    model, variables, data, settings, counts = single
    grid = settings.box_thresholds

    @jax.jit
    def per_image(variables, images, labels, gt, gt_valid):
        out = forward.predict_maps(settings, model, variables, images, labels)
        return out["logits"], {k: boxes.max_contour_iou(sm, grid, gt, gt_valid)
                               for k, sm in out["scoremaps"].items()}

    logits, ious = jax.device_get(per_image(variables, data["image"], data["label"],
                                            data["boxes"], data["box_valid"]))
    top1 = np.argmax(logits, 1) == data["label"]
    curves = step.curves(settings, counts)
    results = step.finalize(settings, counts)
    for kind, iou in ious.items():
        hit = iou >= 0.5                                                  # [B, T]
        np.testing.assert_allclose(curves[kind]["gt_known_loc"], hit.mean(0))
        np.testing.assert_allclose(curves[kind]["top1_loc"], (hit & top1[:, None]).mean(0))
        # GT-known Loc at grid threshold t is BoxAcc(t): its max is MaxBoxAcc.
        assert curves[kind]["gt_known_loc"].max() == pytest.approx(results[f"{kind}/max_box_acc"])


def test_selection_on_the_same_split_picks_the_best_test_threshold(single):
    _, _, _, settings, counts = single
    sel = thresholds.selection(settings, counts, counts)
    flat = thresholds.flat_selection(sel)
    for kind in settings.map_kinds:
        for metric in ("gt_known_loc", "top1_loc"):
            s = sel[kind][metric]
            assert s["test"] == s["best_test"] == s["validation"]
            assert flat[f"{kind}/{metric}/valsel_threshold"] == s["threshold"]
            chex.assert_shape(s["validation_curve"], (len(settings.box_thresholds),))


def multi_label_data(n=6, seed=0, classes=3):
    """Random blobs: channel j holds the evidence of digit j; each image has 1-2 digits."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.2, (n, te.SIZE, te.SIZE, classes)).astype(np.float32)
    labels = np.zeros((n, classes), np.float32)
    boxes_ = np.zeros((n, 2, 4), np.int32)
    box_labels = np.zeros((n, 2), np.int32)
    box_valid = np.zeros((n, 2), bool)
    for i in range(n):
        present = rng.choice(classes, size=int(rng.integers(1, 3)), replace=False)
        for g, c in enumerate(present):
            x0, y0 = rng.integers(0, 9, 2)
            x1, y1 = x0 + rng.integers(3, 7), y0 + rng.integers(3, 7)
            images[i, y0:y1 + 1, x0:x1 + 1, c] += rng.uniform(0.5, 1.0)
            jitter = rng.integers(-1, 2, 4)
            boxes_[i, g] = np.clip([x0, y0, x1, y1] + jitter, 0, te.SIZE - 1)
            boxes_[i, g, 2:] = np.maximum(boxes_[i, g, 2:], boxes_[i, g, :2])
            box_labels[i, g], box_valid[i, g], labels[i, c] = c, True, 1.0
    return {"image": images, "label": np.argmax(labels, 1).astype(np.int32), "labels": labels,
            "boxes": boxes_, "box_labels": box_labels, "box_valid": box_valid,
            "valid": np.ones(n, bool)}


@pytest.mark.parametrize("normalize", ["minmax", "max"])
def test_multi_label_curve_matches_a_loop_over_pairs(normalize):
    classes = 3
    model = te.PassThrough(classes)
    variables = {"params": {"head": {"kernel": jnp.eye(classes), "bias": jnp.zeros(classes)}}}
    data = multi_label_data(classes=classes)
    data["image"] = data["image"] - 0.1  # signed maps: the two normalisations differ
    settings = EvalSettings.from_config(te.make_config(num_classes=classes, multi_label=True,
                                                       normalize=normalize))
    counts = driver.evaluate_counts(settings, model, variables, [data], num_devices=1)
    curves = step.curves(settings, counts)
    grid = settings.box_thresholds
    for kind in settings.map_kinds:
        hits, pairs = np.zeros(len(grid)), 0
        per_class = np.zeros((classes, len(grid)))
        for i in range(len(data["valid"])):
            for c in np.flatnonzero(data["labels"][i] > 0.5):
                m = forward.multilabel_class_maps(kind, data["image"][i:i + 1], jnp.eye(classes),
                                                  jnp.array([[c]]), region_size=3)[:, 0]
                sm = boxes.scoremaps(m, (te.SIZE, te.SIZE), "bicubic", normalize=normalize)
                bx = np.asarray(boxes.largest_box(sm, grid))[0]                    # [T, 4]
                gt = data["boxes"][i][(data["box_labels"][i] == c) & data["box_valid"][i]]
                iou = np.asarray(metrics.iou(bx[:, None], gt[None])).max(1)       # [T]
                hits += iou >= 0.5
                per_class[c] += iou >= 0.5
                pairs += 1
        np.testing.assert_allclose(curves[kind]["loc_acc"], hits / pairs, err_msg=kind)
        count = np.array([(data["labels"][:, c] > 0.5).sum() for c in range(classes)])
        np.testing.assert_allclose(curves[kind]["loc_acc_per_class"], per_class / count[:, None])


@pytest.fixture(scope="module")
def tiny_readings():
    model = te.TinyNet(te.NUM_CLASSES)
    variables = te.tiny_variables(model)
    val, test = [te.make_data(8, seed=3)], [te.make_data(8, seed=4)]
    config = te.make_config(map_kinds=("cam", "infocam"))
    return config, model, variables, val, test, thresholds.evaluate_readings(
        config, model, variables, val, test, num_devices=1)


def test_readings_fixed_threshold_equals_plain_evaluation(tiny_readings):
    config, model, variables, _, test, out = tiny_readings
    for mode in ("minmax", "max"):
        assert out[mode]["settings"].normalize == mode
        plain = driver.evaluate(config, model, variables, test, num_devices=1, normalize=mode)
        assert out[mode]["test"] == pytest.approx(plain, nan_ok=True)


def test_readings_table_names_every_reading(tiny_readings):
    *_, out = tiny_readings
    aggs = {"softmax": seed_tables.aggregate([readings_table.flat(out)])}
    text = readings_table.render(aggs, out["minmax"]["settings"], [0])
    for row in ("max-normalised, t = 0.2 (paper)", "min-max, t = 0.2 (protocol)",
                "min-max, t chosen on validation", "max-normalised, t chosen on validation",
                "best t on test", "| head | reading | cam | infocam |", "**top1_loc**",
                "**max_box_acc_v2**"):
        assert row in text
    sel = out["max"]["selection"]["cam"]["gt_known_loc"]
    assert f"{100 * sel['test']:.1f} ± 0.0 (t {sel['threshold']:.2f})" in text


@pytest.mark.parametrize("field,value", [("normalize", "l2"), ("box_backend", "gpu")])
def test_bad_reading_settings_raise(field, value):
    with pytest.raises(ValueError, match=field):
        EvalSettings.from_config(te.make_config(**{field: value}))
