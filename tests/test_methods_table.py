"""Tests of infocam_jax/experiments/methods_table.py: Eq. (V) (``map_table.v2_selection``) against
NumPy, and the method table end to end through ``methods_table.reproduce_methods`` (what
``infocam-reproduce`` runs for a config listing ``methods``) on the tiny synthetic config."""
import json
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax.experiments import map_table, methods_table, reproduction
from infocam_jax import metrics
from infocam_jax.evaluation.settings import EvalSettings
from infocam_jax.train import loop

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import tiny  # noqa: E402  (tests/tiny.py)

IOUS = (0.3, 0.5, 0.7)


def _counts(correct, count, grid):
    """Stacked box_v2 counters of several map kinds: correct int [kinds, I, T]."""
    return {"box_v2": metrics.BoxAccuracyCounts(
        jnp.asarray(correct, jnp.int32), jnp.full((correct.shape[0],), count, jnp.int32),
        tuple(grid), IOUS, True)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v2_selection_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    settings = EvalSettings(image_size=(8, 8), num_classes=3, num_box_thresholds=10,
                            map_kinds=("cam", "infocam"), box_accuracy=True)
    grid = settings.box_thresholds
    val = rng.integers(0, 40, size=(2, 3, len(grid)))
    test = rng.integers(0, 50, size=(2, 3, len(grid)))
    val[0, 1, 3] = val[0, 1, 7] = 41  # a tie: the first (lowest) threshold wins
    sel = map_table.v2_selection(settings, _counts(val, 40, grid), _counts(test, 50, grid))
    for k, kind in enumerate(settings.map_kinds):
        best = np.argmax(val[k] / 40.0, axis=1)
        want = np.mean([test[k, i, best[i]] / 50.0 for i in range(3)])
        np.testing.assert_allclose(sel[kind]["valsel"], want, rtol=1e-6)
        np.testing.assert_allclose(sel[kind]["oracle"], np.mean(test[k].max(1) / 50.0), rtol=1e-6)
        np.testing.assert_allclose(sel[kind]["thresholds"], np.asarray(grid)[best])
        assert sel[kind]["valsel"] <= sel[kind]["oracle"] + 1e-9
    assert sel["cam"]["thresholds"][1] == pytest.approx(grid[3])


def test_methods_table_end_to_end(tmp_path):
    c = tiny.tiny_config(multi_label=False, loss="softmax", image_size=(16, 16),
                         methods=("has",), num_box_thresholds=10,
                         map_kinds=("cam", "infocam", "infocam_plus"), eval_every_epochs=0,
                         checkpoint_best=False, learning_rates=(0.05, 0.01),
                         ablation_methods=("has",), ablation_region_sizes=(1, 2))
    logs = []
    with pytest.raises(ValueError, match="config.methods=.*methods_table.reproduce_methods"):
        reproduction.reproduce(c, str(tmp_path), seeds=[0], region_sizes=[])
    figure = tmp_path / "maps.png"
    out = methods_table.reproduce_methods(c, str(tmp_path), seeds=[0, 1], log=logs.append,
                                          figure=str(figure))
    text = (tmp_path / "summary.md").read_text()
    for name in ("| has |", "CAM", "infoCAM", "infoCAM+",
                 "chosen on the validation split", "validation top-1", "Table 5",
                 "| has | 2 | off (R x R sum of CAM) |", "GT-known Loc", "Top-1 Loc"):
        assert name in text, name
    assert out["methods"] == ["has"]
    assert figure.stat().st_size > 0
    for method in ("has",):
        grid = {rate: json.loads((tmp_path / method / f"lr{rate:g}" / "seed0"
                                  / methods_table.EVAL_FILE).read_text()) for rate in (0.05, 0.01)}
        chosen = out["learning_rates"][method]
        val = {r: g["eval"]["validation"]["top1_cls"] for r, g in grid.items()}
        assert val[chosen] == max(val.values())
        assert chosen == min(r for r in val if val[r] == max(val.values()))
        # Only the chosen rate trains the other seeds.
        assert (tmp_path / method / f"lr{chosen:g}" / "seed1" / methods_table.EVAL_FILE).exists()
        other = 0.05 if chosen == 0.01 else 0.01
        assert not (tmp_path / method / f"lr{other:g}" / "seed1").exists()
        record = grid[chosen]
        assert record["method"] == method and record["learning_rate"] == chosen
        saved = json.loads((tmp_path / method / f"lr{chosen:g}" / "seed0"
                            / "config.json").read_text())
        assert saved["method"] == method and saved["methods"] == []
        assert saved["optimizer"]["learning_rate"] == chosen and saved["learning_rates"] == []
        for kind in ("cam", "infocam", "infocam_plus"):
            assert 0.0 <= record["eval"]["selection"][kind]["valsel"] <= 1.0
            for metric in ("gt_known_loc", "top1_loc"):
                assert 0.0 <= record["eval"]["loc"][f"{kind}/{metric}/valsel"] <= 1.0
        assert set(record["eval"]["ablation"]) == {"1", "2"}
        one = record["eval"]["ablation"]["1"]["selection"]
        # R = 1 without subtraction is CAM itself.
        assert one["cam_region"] == record["eval"]["selection"]["cam"]
    # A second invocation reuses every run (2 rates + 1 more seed).
    logs.clear()
    methods_table.reproduce_methods(c, str(tmp_path), seeds=[0, 1], log=logs.append)
    assert sum("reusing" in line for line in logs) == 3


@pytest.mark.parametrize("scores, want", [
    ({0.1: 0.9, 0.3: 0.95}, 0.3), ({0.1: 0.95, 0.3: 0.95}, 0.1), ({0.3: 0.5, 0.03: 0.7}, 0.03)])
def test_rate_with_the_best_validation_top1_lowest_on_ties(scores, want):
    by_rate = {r: {"eval": {"validation": {"top1_cls": v}}} for r, v in scores.items()}
    assert methods_table.choose_rate(by_rate) == want


def test_diverged_rates_are_out_of_the_choice_and_all_diverged_is_an_error():
    ok = {"eval": {"validation": {"top1_cls": 0.5}}}
    assert methods_table.choose_rate({0.3: {"diverged": "nan"}, 0.1: ok}) == 0.1
    with pytest.raises(ValueError, match="every learning rate of the grid diverged"):
        methods_table.choose_rate({0.3: {"diverged": "nan"}, 0.1: {"diverged": "inf"}})


def _saved_run(path, rate, top1=0.9):
    """A finished run's methods_eval.json (every reading the tables take), so no training runs."""
    kinds = ("cam", "infocam", "infocam_plus")
    ev = {"selection": {k: {"valsel": 0.5, "oracle": 0.6, "validation": 0.55} for k in kinds},
          "loc": {f"{k}/{m}/{key}": 0.5 for k in kinds for m in methods_table.LOC_METRICS
                  for key in ("valsel", "best_test")},
          "validation": {"top1_cls": top1}, "test": {"top1_cls": top1}, "ablation": {}}
    path.mkdir(parents=True)
    (path / methods_table.EVAL_FILE).write_text(json.dumps(
        {"method": "cam", "learning_rate": rate, "seed": 0, "train_seconds": 1.0,
         "eval_seconds": 1.0, "best_epoch": 1, "eval": ev}))


def test_a_diverged_grid_rate_is_recorded_and_skipped(tmp_path, monkeypatch):
    c = tiny.tiny_config(multi_label=False, loss="softmax", image_size=(16, 16),
                         methods=("cam",), num_box_thresholds=10, eval_every_epochs=0,
                         checkpoint_best=False, learning_rates=(0.05, 0.01))
    _saved_run(tmp_path / "cam" / "lr0.01" / "seed0", 0.01)
    calls = []

    def diverging(sub, directory):
        calls.append((float(sub.optimizer.learning_rate), int(sub.seed)))
        raise loop.NonFiniteLossError("training loss became nan by step 3 (epoch 1)")

    monkeypatch.setattr(methods_table.training, "train_and_evaluate", diverging)
    out = methods_table.reproduce_methods(c, str(tmp_path), seeds=[0], log=lambda _: None)
    assert calls == [(0.05, 0)] and out["learning_rates"]["cam"] == 0.01
    record = json.loads((tmp_path / "cam" / "lr0.05" / "seed0" / methods_table.EVAL_FILE)
                        .read_text())
    assert "nan by step 3" in record["diverged"] and "eval" not in record
    assert "| cam | 0.05 | diverged |" in (tmp_path / "summary.md").read_text()
    # Resumed: the diverged rate is reused, not trained again.
    calls.clear()
    methods_table.reproduce_methods(c, str(tmp_path), seeds=[0], log=lambda _: None)
    assert calls == []
    # Outside the grid, a diverged seed at the chosen rate stops the study.
    with pytest.raises(loop.NonFiniteLossError, match="nan by step 3"):
        methods_table.reproduce_methods(c, str(tmp_path), seeds=[0, 1], log=lambda _: None)
    assert calls == [(0.01, 1)]


def _record(values, rate=0.1):
    return {"eval": {"selection": {k: {"valsel": v} for k, v in values.items()},
                     "loc": {}, "test": {"top1_cls": 0.9}},
            "train_seconds": 10.0, "learning_rate": rate}


def test_gain_is_marked_only_beyond_both_seed_spreads():
    recs = {"cam": [_record({"cam": 0.50, "infocam": 0.60}), _record({"cam": 0.52, "infocam": 0.62})],
            "adl": [_record({"cam": 0.50, "infocam": 0.51}), _record({"cam": 0.52, "infocam": 0.53})]}
    text = methods_table.table(recs, ("cam", "infocam"))
    assert "| cam | 51.0 ± 1.4 | 61.0 ± 1.4 † |" in text
    assert "| adl | 51.0 ± 1.4 | 52.0 ± 1.4 |" in text


@pytest.mark.parametrize("overrides, match", [
    (dict(methods=("cam", "gradcam")), "config.method must be one of"),
    (dict(methods=("cam",), learning_rates=(0.1, 0.1)), "config.learning_rates must be distinct"),
    (dict(methods=("cam",), learning_rates=(0.0,)), "config.learning_rates must be distinct"),
    (dict(methods=("cam",), ablation_methods=("adl",)), "config.ablation_methods must be among"),
    (dict(methods=("cam",), ablation_methods=("cam",), ablation_region_sizes=(0,)),
     "config.ablation_region_sizes ints >= 1"),
])
def test_methods_table_checks_every_method_before_the_workdir(tmp_path, overrides, match):
    c = tiny.tiny_config(multi_label=False, loss="softmax", **overrides)
    with pytest.raises(ValueError, match=match):
        methods_table.reproduce_methods(c, str(tmp_path / "run"), seeds=[0])
    assert not (tmp_path / "run").exists()
