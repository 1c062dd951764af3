"""Post-hoc map kinds and faithfulness metrics in the evaluation (settings, eval step, export).

Wiring tests on the small stand-in model of test_evaluate: the results of the pmapped eval step
equal the same numbers computed from the library pieces one by one (posthoc maps ->
boxes.scoremaps -> metrics / faithfulness counters), padding and batch splitting change nothing,
two devices equal one, and the score-map export writes the post-hoc kinds. The maths of the
maps and of the metrics are tested in test_posthoc.py and test_faithfulness.py.
"""
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import boxes, metrics
from infocam_jax.metrics import faithfulness
from infocam_jax.maps import posthoc
from infocam_jax.evaluation import driver, forward, step
from infocam_jax.evaluation.scoremaps import write
from infocam_jax.evaluation import settings as eval_settings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_evaluate as t  # noqa: E402  pylint: disable=wrong-import-position
import two_devices  # noqa: E402  pylint: disable=wrong-import-position

KINDS = ("cam", "gradcam", "gradcampp", "eigencam")
FAITH = ("confidence", "road")
PERCENTILES = {"road_morf_percentiles": (50, 80), "road_lerf_percentiles": (50, 80)}


def faith_config(**overrides):
    fields = {"map_kinds": KINDS, "eval_faithfulness": FAITH, **PERCENTILES, **overrides}
    return t.make_config(**fields)


@pytest.fixture(scope="module")
def tiny():
    model = t.TinyNet(t.NUM_CLASSES)
    return model, t.tiny_variables(model), t.make_data()


@pytest.fixture(scope="module")
def results(tiny):
    model, variables, data = tiny
    return driver.evaluate(faith_config(), model, variables, [data], num_devices=1)


def test_keys(results):
    per_kind = {"average_drop", "increase_in_confidence", "mean_absolute_drop",
                "mean_confidence_change", "road_combined"}
    for order in ("morf", "lerf"):
        per_kind |= {f"road_{order}", f"road_{order}_accuracy", f"road_{order}_unconverged"}
        per_kind |= {f"road_{order}_p{p}{s}" for p in (50, 80) for s in ("", "_accuracy")}
    want = {k for k in t.SINGLE_KEYS if k.split("/")[0] not in eval_settings.MAP_KINDS}
    want |= {f"{kind}/{m}" for kind in KINDS
             for m in per_kind | {k.split("/")[1] for k in t.SINGLE_KEYS if "/" in k}}
    assert set(results) == want


def test_matches_the_pieces(tiny, results):
    """Every kind's localisation and faithfulness numbers, recomputed outside the eval step."""
    model, variables, data = tiny
    settings = eval_settings.EvalSettings.from_config(faith_config())
    images, labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
    logits, features = model.apply(variables, images, train=False)
    kernel = variables["params"]["head"]["kernel"]

    def apply_fn(x):
        return model.apply(variables, x, train=False)[0]

    for kind in KINDS:
        if kind == "cam":
            maps = jnp.einsum("bhwk,kb->bhw", features, kernel[:, labels])
        else:
            maps = posthoc.compute(kind, model, variables, images, labels)
        sm = boxes.scoremaps(maps, settings.image_size, settings.upsample)
        v2 = metrics.max_box_accuracy_v2(sm, data["boxes"], data["box_valid"],
                                         settings.box_thresholds)
        assert results[f"{kind}/max_box_acc_v2"] == pytest.approx(float(v2["max_box_acc_v2"]))
        conf = faithfulness.confidence_counts(apply_fn, images, sm, labels).result()
        for name in ("average_drop", "increase_in_confidence"):
            assert results[f"{kind}/{name}"] == pytest.approx(float(conf[name]), abs=1e-6)
        key = jax.random.PRNGKey(settings.road_seed)
        changes = {}
        for order in ("morf", "lerf"):
            road = faithfulness.road_counts(apply_fn, images, sm, labels, key, (50, 80),
                                            order).result()
            for j, p in enumerate((50, 80)):
                assert results[f"{kind}/road_{order}_p{p}"] == pytest.approx(
                    float(road["score_change"][j]), abs=1e-6)
                assert results[f"{kind}/road_{order}_p{p}_accuracy"] == pytest.approx(
                    float(road["accuracy"][j]))
            changes[order] = float(np.mean(np.asarray(road["score_change"])))
        assert results[f"{kind}/road_combined"] == pytest.approx(
            (changes["lerf"] - changes["morf"]) / 2, abs=1e-6)


def test_road_converges_by_default(results):
    for kind in KINDS:
        for order in ("morf", "lerf"):
            assert results[f"{kind}/road_{order}_unconverged"] == 0


def test_road_unconverged_counted_through_the_eval_step(tiny, monkeypatch):
    """A CG cap of one step leaves the solves above tol: the eval step counts them per order
    (images x percentiles), where the default cap counts none (test above). The settings are
    this test's own (one kind, percentile 60), so the step compiled here (with the capped
    solver) is not the cached step of the other tests."""
    model, variables, data = tiny
    capped = faithfulness.road_images

    def one_step(*args, **kwargs):
        return capped(*args, max_iterations=1, **kwargs)

    monkeypatch.setattr(faithfulness, "road_images", one_step)
    config = faith_config(map_kinds=("cam",), eval_faithfulness=("road",),
                          road_morf_percentiles=(60,), road_lerf_percentiles=(60,))
    res = driver.evaluate(config, model, variables, [data], num_devices=1)
    for order in ("morf", "lerf"):
        assert 0 < res[f"cam/road_{order}_unconverged"] <= int(np.sum(data["valid"]))
        assert isinstance(res[f"cam/road_{order}_unconverged"], int)


def test_padding_and_splitting_change_nothing(tiny, results):
    model, variables, data = tiny
    split = driver.evaluate(faith_config(), model, variables, t.split_batches(data, 4),
                            num_devices=1)
    assert split == pytest.approx(results, abs=1e-6)


def test_two_devices_match_one(results):
    two = two_devices.run_json("""
        import test_evaluate as t
        import test_eval_posthoc as p
        from infocam_jax.evaluation import driver
        model = t.TinyNet(t.NUM_CLASSES)
        res = driver.evaluate(p.faith_config(), model, t.tiny_variables(model),
                              t.split_batches(t.make_data(), 3, pad=False), num_devices=2)
        print("RESULTS" + json.dumps(res))
    """)
    assert two == pytest.approx(results, abs=1e-6)


def test_one_cached_step(tiny):
    model, _, _ = tiny
    settings = eval_settings.EvalSettings.from_config(faith_config())
    assert step.make_eval_step(settings, model, num_devices=1) is step.make_eval_step(
        eval_settings.EvalSettings.from_config(faith_config()), model, num_devices=1)


def test_from_config_reads_the_fields():
    s = eval_settings.EvalSettings.from_config(faith_config(
        posthoc_layer="conv", posthoc_chunk_size=3, map_kinds=["scorecam", "cam"]))
    assert s.map_kinds == ("scorecam", "cam") and s.posthoc_kinds == ("scorecam",)
    assert s.faithfulness == FAITH and s.road_morf_percentiles == (50.0, 80.0)
    assert s.posthoc_options("scorecam") == {"layer": "conv", "chunk_size": 3}
    assert s.posthoc_options("gradcam") == {"layer": "conv"}
    default = eval_settings.EvalSettings.from_config(t.make_config())
    assert default.faithfulness == () and default.road_morf_percentiles == (80,)
    assert default.road_lerf_percentiles == (20,)
    hash(s)


@pytest.mark.parametrize("overrides,match", [
    ({"map_kinds": ("gradcam", "smoothgrad")}, "map_kinds"),
    ({"multi_label": True, "map_kinds": ("cam", "gradcam")}, "map_kinds"),
    ({"multi_label": True, "map_kinds": ("cam",), "faithfulness": ("confidence",)},
     "faithfulness"),
    ({"faithfulness": ("drop",)}, "faithfulness"),
    ({"faithfulness": ("road", "road")}, "faithfulness"),
    ({"road_morf_percentiles": (0,)}, "road_morf_percentiles"),
    ({"road_lerf_percentiles": ()}, "road_lerf_percentiles"),
    ({"road_noise": -0.1}, "road_noise"),
    ({"posthoc_chunk_size": 0}, "posthoc_chunk_size"),
    ({"posthoc_layer": ""}, "posthoc_layer"),
])
def test_bad_settings(overrides, match):
    with pytest.raises(ValueError, match=match):
        eval_settings.EvalSettings(image_size=(16, 16), **overrides)


def test_unknown_layer_names_the_argument(tiny):
    model, variables, data = tiny
    with pytest.raises(ValueError, match="layer"):
        driver.evaluate(t.make_config(map_kinds=("gradcam",), posthoc_layer="nope"), model,
                        variables, [data], num_devices=1)


def test_predict_maps_and_export_write_posthoc_kinds(tiny, tmp_path):
    model, variables, data = tiny
    config = t.make_config(map_kinds=("cam", "gradcam"), dataset="synthetic")
    settings = eval_settings.EvalSettings.from_config(config)
    out = forward.predict_maps(settings, model, variables, data["image"], data["label"])
    maps = posthoc.compute("gradcam", model, variables, data["image"], data["label"])
    np.testing.assert_allclose(np.asarray(out["scoremaps"]["gradcam"]),
                               np.asarray(boxes.scoremaps(maps, (t.SIZE, t.SIZE), "bicubic")),
                               atol=1e-6)
    written = write.export_model_scoremaps(config, model, variables, [data],
                                                     str(tmp_path))
    root = written["scoremap_roots"]["gradcam"]
    first = np.load(os.path.join(root, "test", "0000000.png.npy"))
    np.testing.assert_allclose(first, np.clip(np.asarray(out["scoremaps"]["gradcam"][0]), 0, 1),
                               atol=1e-6)


def test_map_table_selection_on_the_test_split_is_the_protocol(tiny):
    """With validation = test, the validation-chosen MaxBoxAccV2 is MaxBoxAccV2 itself; on
    another validation split it cannot exceed it."""
    from infocam_jax.experiments import map_table
    model, variables, data = tiny
    kinds = ("cam", "gradcam")
    settings = eval_settings.EvalSettings.from_config(t.make_config())
    same = map_table.evaluate(settings, model, variables, [data], [data],
                              map_kinds=kinds, num_devices=1)
    other = map_table.evaluate(settings, model, variables, [t.make_data(seed=5)], [data],
                               map_kinds=kinds, num_devices=1)
    grouped = map_table.evaluate(settings, model, variables, iter([data]), iter([data]),
                                 map_kinds=kinds, num_devices=1, kinds_per_pass=1)
    assert grouped.keys() == same.keys()
    for key, value in same.items():  # one kind per step: the same numbers (float rounding)
        np.testing.assert_allclose(grouped[key], value, rtol=1e-6, atol=1e-12, err_msg=key)
    with pytest.raises(ValueError, match="kinds_per_pass must be >= 1"):
        map_table.evaluate(settings, model, variables, [data], [data], map_kinds=kinds,
                           num_devices=1, kinds_per_pass=0)
    for kind in kinds:
        assert same[f"{kind}/max_box_acc_v2/valsel"] == pytest.approx(same[f"{kind}/max_box_acc_v2"])
        assert other[f"{kind}/max_box_acc_v2/valsel"] <= other[f"{kind}/max_box_acc_v2"] + 1e-9
        assert f"{kind}/average_drop" in same
    text = map_table.format_table(same, kinds)
    assert "| Grad-CAM |" in text and "Average drop" in text and "ms / image" not in text
    speed = map_table.seconds_per_image(settings, model, variables, data, kinds, repeats=1)
    assert set(speed) == set(kinds) and all(0 < v < 60 for v in speed.values())
    timed = map_table.format_table({**same, **{f"{k}/seconds_per_image": v
                                               for k, v in speed.items()}}, kinds)
    assert "ms / image |" in timed.splitlines()[0]
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        map_table.seconds_per_image(settings, model, variables, data, kinds, repeats=0)
