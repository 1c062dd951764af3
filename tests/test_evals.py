"""Evaluators named by the config (``evaluation.evaluators``): the base config's list,
``config.evals`` in training and its errors, cheap per-epoch validation with unchanged final
numbers, and PxAP logged per epoch and at test for a mask dataset in wsol_metadata layout."""
import json

import ml_collections
import numpy as np
import pytest

from infocam_jax.train import loop
from infocam_jax.experiments import training
from infocam_jax.evaluation import evaluators

import test_wsol_metadata as twm  # noqa: E402  (metadata trees)
import tiny  # noqa: E402


def test_default_list_is_cheap_validation_then_the_full_protocol():
    evals = evaluators.build(tiny.tiny_config())
    assert [(e.name, type(e).__name__, e.every_epoch, e.final) for e in evals] == [
        ("classification", "Classification", True, False),
        ("localization", "Localization", False, True)]
    cls = evals[0].settings
    assert (cls.map_kinds, cls.box_accuracy, cls.num_box_thresholds) == (("cam",), False, 1)
    assert evals[1].settings.num_box_thresholds == 1000


def test_evals_override_settings_per_evaluator():
    c = tiny.tiny_config(evals=ml_collections.ConfigDict())
    c.evals.loc = dict(type="localization", map_kinds=["infocam"], normalize="max")
    c.evals.val = dict(type="classification", every_epoch=True)
    loc, val = evaluators.build(c)
    assert (loc.name, loc.settings.map_kinds, loc.settings.normalize) == ("loc", ("infocam",),
                                                                          "max")
    assert val.every_epoch and val.final


@pytest.mark.parametrize("spec, field, match", [
    (dict(type="boxes"), None, "type='boxes' is not one of"),
    (dict(type="localization", colour=1), None, "evals.x.colour is not an evaluator field"),
    (dict(every_epoch=True), None, "must be a dict with a 'type'"),
    (dict(type="pxap"), None, "type='pxap' needs a mask dataset"),
])
def test_bad_or_conflicting_evals_raise(spec, field, match):
    c = tiny.tiny_config()
    c.evals.x = spec
    if field:
        c[field[0]] = field[1]
    with pytest.raises(ValueError, match=match):
        evaluators.build(c)


def test_no_evaluator_raises():
    with pytest.raises(ValueError, match="config.evals must name at least one evaluator"):
        evaluators.build(tiny.tiny_config(evals=ml_collections.ConfigDict()))


def test_selection_needs_a_per_epoch_accuracy():
    c = tiny.tiny_config(evals=ml_collections.ConfigDict())
    c.evals.loc = dict(type="localization")
    with pytest.raises(ValueError, match="model selection needs an every_epoch evaluator"):
        evaluators.selection_accuracy(evaluators.build(c), {})


def _logged(monkeypatch):
    logged = []
    real = loop.write_scalars
    monkeypatch.setattr(loop, "write_scalars",
                        lambda w, step, scalars: (logged.append(dict(scalars)),
                                                  real(w, step, scalars)))
    return logged


def test_cheap_validation_keeps_the_final_numbers(tmp_path, monkeypatch):
    """The base list (classification per epoch) and a full-grid per-epoch validation pick the
    same epoch and give the same final test results."""
    base = dict(num_epochs=2, max_steps_per_epoch=2, num_box_thresholds=20)
    cheap = training.train_and_evaluate(tiny.tiny_config(**base), str(tmp_path / "cheap"))
    full_cfg = tiny.tiny_config(**base, evals=ml_collections.ConfigDict())
    full_cfg.evals.eval = dict(type="localization", every_epoch=True, final=False)
    full_cfg.evals.localization = dict(type="localization")
    logged = _logged(monkeypatch)
    full = training.train_and_evaluate(full_cfg, str(tmp_path / "full"))
    assert cheap.keys() == full.keys()
    np.testing.assert_equal(cheap, full)  # exact, NaN where nothing was counted
    per_epoch = [s for s in logged if any(k.startswith("eval/") for k in s)]
    assert len(per_epoch) == 2 and "eval/cam/loc_acc" in per_epoch[0]


def _mask_config(root):
    c = tiny.tiny_config(
        dataset="wsol_metadata", manual_dir=str(root / "images"),
        wsol_metadata_root=str(root / "metadata"), wsol_mask_root=str(root / "masks"),
        image_size=(16, 16), eval_protocol="resize", max_boxes=2, num_classes=3,
        multi_label=False, loss="softmax", num_epochs=2, max_eval_batches=0,
        num_box_thresholds=10)
    c.data_threads = 1
    c.evals.pxap = dict(type="pxap", every_epoch=True)
    return c


def _write_ignore_masks(root):
    """The tree names an ignore mask per image: a 3-pixel-wide left band."""
    from PIL import Image
    for split in ("val", "test"):
        for line in (root / "metadata" / split / "localization.txt").read_text().splitlines():
            _, mask_path, ignore_path = line.split(",")
            if ignore_path:
                shape = np.asarray(Image.open(root / "masks" / mask_path)).shape
                band = np.zeros(shape, np.uint8)
                band[:, :3] = 255
                Image.fromarray(band).save(root / "masks" / ignore_path)


def test_mask_dataset_logs_pxap_per_epoch_and_at_test(tmp_path, monkeypatch):
    twm.make_tree(tmp_path, kind="masks", sizes={"train": 8, "val": 4, "test": 6})
    _write_ignore_masks(tmp_path)
    c = _mask_config(tmp_path)
    assert [e.name for e in evaluators.build(c)] == ["classification", "localization", "pxap"]
    logged = _logged(monkeypatch)
    results = training.train_and_evaluate(c, str(tmp_path / "work"))
    per_epoch = [s for s in logged if "pxap/cam/pxap" in s]
    assert len(per_epoch) == 2  # both validation epochs (pxap every_epoch)
    for key in ("pxap/cam/pxap", "pxap/infocam/pxap", "pxap/cam/piou/valsel",
                "pxap/cam/piou/valsel_threshold", "cam/gt_known_loc"):
        assert key in results and np.isfinite(results[key]), key
        assert 0.0 <= results[key] <= 1.0
    on_disk = json.loads((tmp_path / "work" / "results.json").read_text())
    assert on_disk["pxap/cam/pxap"] == pytest.approx(results["pxap/cam/pxap"])
    assert any("test/pxap/cam/pxap" in s for s in logged)


def test_launch_evaluate_runs_the_final_list(tmp_path):
    """launch/evaluate.py on a trained workdir gives the training's own test results."""
    import pathlib
    import subprocess
    import sys
    repo = pathlib.Path(__file__).resolve().parents[1]
    common = ["--config=configs/digits.py:runlocal", "--config.dataset=synthetic",
              "--config.image_size=(16, 32)", "--config.heads=('pc_sigmoid',)",
              "--config.loss=pc_sigmoid", f"--workdir={tmp_path}"]
    for cmd in ([sys.executable, "launch/train.py"] + common,
                [sys.executable, "launch/evaluate.py"] + common
                + [f"--output_dir={tmp_path / 'again'}"]):
        done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((tmp_path / "pc_sigmoid" / "results.json").read_text())
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    trained.pop("epoch")
    assert again == trained
