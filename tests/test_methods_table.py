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
                         methods=("has", "cutmix"), num_box_thresholds=10,
                         map_kinds=("cam", "infocam", "infocam_plus"), eval_every_epochs=0,
                         checkpoint_best=False)
    logs = []
    with pytest.raises(ValueError, match="config.methods=.*methods_table.reproduce_methods"):
        reproduction.reproduce(c, str(tmp_path), seeds=[0], region_sizes=[])
    out = methods_table.reproduce_methods(c, str(tmp_path), seeds=[0], log=logs.append)
    text = (tmp_path / "summary.md").read_text()
    for name in ("| has |", "| cutmix |", "CAM", "infoCAM", "infoCAM+",
                 "chosen on the validation split"):
        assert name in text
    assert out["methods"] == ["has", "cutmix"]
    for method in ("has", "cutmix"):
        record = json.loads((tmp_path / method / "seed0" / methods_table.EVAL_FILE).read_text())
        assert record["method"] == method
        saved = json.loads((tmp_path / method / "seed0" / "config.json").read_text())
        assert saved["method"] == method and saved["methods"] == []
        for kind in ("cam", "infocam", "infocam_plus"):
            assert 0.0 <= record["eval"]["selection"][kind]["valsel"] <= 1.0
    # A second invocation reuses every run.
    logs.clear()
    methods_table.reproduce_methods(c, str(tmp_path), seeds=[0], log=logs.append)
    assert sum("reusing" in line for line in logs) == 2


def test_methods_table_checks_every_method_before_the_workdir(tmp_path):
    c = tiny.tiny_config(multi_label=False, loss="softmax", methods=("cam", "gradcam"))
    with pytest.raises(ValueError, match="config.method must be one of"):
        methods_table.reproduce_methods(c, str(tmp_path / "run"), seeds=[0])
    assert not (tmp_path / "run").exists()
