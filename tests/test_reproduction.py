"""Keeps the paper's §3.3 pipeline honest, and checks the reproduction driver's own arithmetic.

The end-to-end test builds a few hundred double-digit canvases from real MNIST, trains the
digits CNN-GAP with a PC-sigmoid head for a short while through ``reproduction.reproduce``
(which calls ``training.train_and_evaluate``; ``launch/reproduce.py`` is its flag wrapper), and
checks on the test canvases that infoCAM localises at least as well as CAM and that both are
far above an input-blind random box.
"""
import json
import pathlib

import chex
import numpy as np
import pytest

from infocam_jax import metrics
from infocam_jax.experiments import reproduction
from infocam_jax.experiments import baselines, seed_tables

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _unclamped_iou(a, b):
    """The IoU of the authors' released evaluation code: the intersection is not clamped at 0."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = iw * ih
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)
    return inter / (area(a) + area(b) - inter)


# ----------------------------------------------------------------------------- unit tests

def test_iou_clamps_disjoint_boxes_where_the_authors_code_did_not():
    a, b = [0, 0, 10, 10], [20, 20, 30, 30]
    assert _unclamped_iou(a, b) == pytest.approx(81 / 161)  # 0.503: counted as a hit at 0.5
    assert float(metrics.iou(np.array(a), np.array(b))) == 0.0


def test_baseline_iou_is_the_library_iou():
    """The baselines score random boxes with metrics.iou, checked against a NumPy statement."""
    rng = np.random.default_rng(0)
    a = baselines.random_boxes(rng, (64,), 28, 56).astype(np.float64)
    b = baselines.random_boxes(rng, (64,), 28, 56).astype(np.float64)
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1, 0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1, 0)
    area = lambda x: (x[:, 2] - x[:, 0] + 1) * (x[:, 3] - x[:, 1] + 1)  # noqa: E731
    expected = iw * ih / (area(a) + area(b) - iw * ih)
    chex.assert_trees_all_close(baselines._iou(a, b), expected.astype(np.float32), rtol=1e-6)
    # Known case: 3x3 vs 3x3 overlapping in 2x3 pixels -> 6 / (9 + 9 - 6).
    assert baselines._iou(np.array([0, 0, 2, 2]), np.array([1, 0, 3, 2])) == 0.5


def test_random_boxes_are_ordered_and_inside():
    boxes = baselines.random_boxes(np.random.default_rng(1), (5, 100), 28, 56)
    chex.assert_shape(boxes, (5, 100, 4))
    assert np.all(boxes[..., 0] <= boxes[..., 2]) and np.all(boxes[..., 1] <= boxes[..., 3])
    assert boxes[..., [0, 2]].min() >= 0 and boxes[..., [0, 2]].max() <= 55
    assert boxes[..., [1, 3]].min() >= 0 and boxes[..., [1, 3]].max() <= 27


def test_baselines_on_known_boxes():
    gt = np.array([[0, 0, 27, 27], [28, 0, 55, 27], [4, 4, 23, 23], [30, 2, 40, 25]])
    out = baselines.baseline_accuracies(gt, (28, 56), draws=50, half_canvas=True)
    # Half-canvas box: exact on the first two, IoU 400/784 on the third, 264/784 on the fourth.
    assert out["half_canvas_box"] == pytest.approx(0.75)
    # Full image (1568 px): IoU 784/1568 = 0.5 on the first two only.
    assert out["full_image_box"] == pytest.approx(0.5)
    assert 0.0 <= out["random_box"] < 0.5
    with pytest.raises(ValueError, match="gt_boxes"):
        baselines.baseline_accuracies(np.zeros((0, 4)), (28, 56))


def test_aggregate_is_mean_and_sample_std():
    runs = [{"a": 0.5, "b": 1.0}, {"a": 0.7, "b": float("nan")}, {"a": 0.9, "b": 3.0}]
    agg = seed_tables.aggregate(runs)
    assert agg["a"]["mean"] == pytest.approx(0.7)
    assert agg["a"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert agg["b"]["mean"] == pytest.approx(2.0)  # NaN ignored
    assert seed_tables.pm(agg, "a") == "70.0 ± 20.0"
    assert seed_tables.pm(agg, "missing") == "-"


def test_flatten_and_kinds_for_radius():
    flat = seed_tables.flatten({"test": {"3": {"x": 1.0}, "5": {"x": 2.0}}}, 3)
    assert flat == {"test/R3/x": 1.0, "test/x": 1.0, "test/R5/x": 2.0}
    assert reproduction.kinds_for_radius(("cam", "infocam"), 3, 3) == ("cam", "infocam")
    assert reproduction.kinds_for_radius(("cam", "infocam"), 5, 3) == ("infocam",)


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def small_run(shared_mnist_dir, tmp_path_factory):
    """A short PC-sigmoid training on a few hundred real double-digit MNIST canvases."""
    import sys
    sys.path.insert(0, str(REPO_ROOT))
    from configs import multi_mnist
    c = multi_mnist.get_config()
    root = tmp_path_factory.mktemp("repro")
    c.data_dir = str(root / "tfds")
    c.manual_dir = str(shared_mnist_dir)
    c.num_train_examples = 1600
    c.num_test_examples = 400
    c.heads = ("pc_sigmoid",)
    c.model_options.width = 8         # a quarter of the FLOPs of the default width
    c.batch_size = 16
    c.eval_batch_size = 200
    c.num_epochs = 2                  # 200 steps
    c.optimizer.learning_rate = 0.05
    c.optimizer.decay_epochs = 1
    c.eval_every_epochs = 2
    c.log_every_steps = 10000
    c.keep_checkpoints = 1
    summary_ = reproduction.reproduce(c, str(root / "work"), seeds=[0], region_sizes=[3],
                                  cam_thresholds=[0.2, 0.4, 0.6], log=lambda s: None)
    return summary_, root / "work", c


def test_infocam_not_below_cam_and_both_far_above_random(small_run):
    result, workdir, _ = small_run
    agg = result["aggregate"]["pc_sigmoid"]
    random_box = result["baselines"]["random_box"]
    assert random_box < 0.1, result["baselines"]
    # Each map at its score threshold chosen on the validation canvases, read on the test ones.
    cam = agg["test/valsel/cam/loc_acc"]["mean"]
    info = agg["test/valsel/infocam/loc_acc"]["mean"]
    assert cam >= 2 * random_box + 0.05, (cam, random_box)
    assert info >= 2 * random_box + 0.05, (info, random_box)
    assert info >= cam - 0.02, (cam, info)  # tolerance: 400 test canvases, ~600 digits
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk["aggregate"]["pc_sigmoid"]["test/valsel/cam/loc_acc"]["mean"] == \
        pytest.approx(cam)
    text = (workdir / "summary.md").read_text()
    assert "| PC-sigmoid |" in text
    # Every table states its reading; both normalisations are read with validation-chosen t.
    assert text.startswith("# ") and "Reading: score maps min-max normalised" in text
    assert "| pc_sigmoid | max-normalised, t = 0.2 (paper) |" in text
    for mode in ("minmax", "max"):
        assert f"readings/{mode}/test/infocam/loc_acc" in agg
        for key in ("valsel", "valsel_threshold", "best_test"):
            assert f"readings/{mode}/infocam/loc_acc/{key}" in agg
    assert (agg["readings/minmax/test/cam/loc_acc"]["mean"]
            == pytest.approx(agg["test/cam/loc_acc"]["mean"]))


def test_saved_runs_reads_the_runs_as_the_reproduction_does(small_run):
    """launch/evaluate_readings.py's library call re-reads the saved checkpoint: its threshold
    selections equal the ones the reproduction computed while it ran (same run, same data)."""
    from infocam_jax.experiments import saved_runs
    result, workdir, config = small_run
    text = saved_runs.read_runs(config, str(workdir), heads=("pc_sigmoid",), seeds=[0],
                                log=lambda s: None)
    assert "max-normalised, t = 0.2 (paper)" in text and "min-max, t chosen on validation" in text
    flat = json.loads((workdir / "pc_sigmoid" / "seed0" / "readings.json").read_text())["flat"]
    agg = result["aggregate"]["pc_sigmoid"]
    for mode in ("minmax", "max"):
        for kind in ("cam", "infocam"):
            for key in ("valsel", "valsel_threshold", "best_test"):
                assert flat[f"{mode}/{kind}/loc_acc/{key}"] == pytest.approx(
                    agg[f"readings/{mode}/{kind}/loc_acc/{key}"]["mean"]), (mode, kind, key)
    assert (workdir / "readings_summary.md").read_text() == text
    # A second call reuses readings.json (no checkpoint restored) and prints the same tables.
    again = saved_runs.read_runs(config, str(workdir), heads=("pc_sigmoid",), seeds=[0],
                                 log=lambda s: None)
    assert again.split("\nWall-clock")[0] == text.split("\nWall-clock")[0]
