"""Tests of configs/: every interface field, the authors' hyper-parameters, runlocal smoke runs."""
import importlib.util
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

from infocam_jax import config as base

REPO = pathlib.Path(__file__).resolve().parents[1]

TABLE1 = [f"{d}_{m}{a}" for d in ("cub", "tiny_imagenet") for m in ("vgg16_gap", "resnet50")
          for a in ("", "_adl")]
CONFIGS = ["digits", "multi_mnist", "cluttered_mnist"] + TABLE1

# docs/interfaces.md "Config fields".
INTERFACE_FIELDS = {
    "dataset": str, "data_dir": str, "manual_dir": str, "num_train_examples": int,
    "num_test_examples": int, "data_seed": int, "image_size": tuple, "resize_size": int,
    "eval_protocol": str, "max_boxes": int, "model": str, "num_classes": int,
    "multi_label": bool, "loss": str, "pretrained": str, "num_epochs": int, "batch_size": int,
    "eval_batch_size": int, "seed": int, "region_size": int, "cam_threshold": float,
    "iou_threshold": float, "num_box_thresholds": int, "upsample": str, "normalize": str,
    "box_backend": str,
    "keep_checkpoints": int, "log_every_steps": int, "eval_every_epochs": int, "runlocal": bool,
}
OPTIMIZER_FIELDS = ("learning_rate", "lr_ratio", "momentum", "nesterov", "weight_decay",
                    "decay_epochs", "decay_factor")


def load(name: str, arg: str | None = None):
    path = REPO / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.get_config(arg)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_has_every_interface_field(name):
    _, c = load(name)
    for field, kind in INTERFACE_FIELDS.items():
        assert field in c, f"{name}: missing {field}"
        assert isinstance(c[field], kind), f"{name}.{field}={c[field]!r} is not {kind.__name__}"
    for field in OPTIMIZER_FIELDS:
        assert field in c.optimizer, f"{name}: missing optimizer.{field}"
    for field in ("adl_positions", "adl_drop_rate", "adl_gamma"):
        assert field in c.model_options
    assert c.dataset in ("digits", "multi_mnist", "cluttered_mnist", "cub", "tiny_imagenet")
    assert c.model in ("digits_cnn", "vgg16_gap", "resnet50")
    assert c.loss in ("softmax", "pc_softmax", "sigmoid", "pc_sigmoid")
    assert c.multi_label == (c.loss in ("sigmoid", "pc_sigmoid"))
    assert c.eval_protocol in ("center_crop", "resize") and c.upsample in ("bicubic", "bilinear")
    assert len(c.image_size) == 2 and c.runlocal is False
    assert c.cam_threshold == 0.2 and c.iou_threshold == 0.5
    assert c.normalize in ("minmax", "max") and c.box_backend in ("auto", "native", "xla")


@pytest.mark.parametrize("name", CONFIGS)
def test_docstring_gives_command_and_runtime(name):
    module, _ = load(name)
    doc = module.__doc__
    assert f"python launch/train.py --config=configs/{name}.py --workdir=" in doc
    assert "Expected runtime:" in doc


@pytest.mark.parametrize("name", TABLE1)
def test_table1_configs_use_the_authors_hyper_parameters(name):
    _, c = load(name)
    vgg, adl, cub = "vgg16" in name, name.endswith("_adl"), name.startswith("cub")
    # info_cam/{CUB-200-2011,Tiny-ImageNet}/scripts/run_{vgg,resnet}.sh of the authors.
    assert c.optimizer.learning_rate == (0.001 if vgg else 0.01)
    assert c.batch_size == {(True, True): 30, (True, False): 128,
                            (False, True): 1280, (False, False): 640}[(cub, vgg)]
    assert (c.num_epochs, c.optimizer.decay_epochs, c.optimizer.decay_factor) == (200, 60, 0.1)
    assert (c.optimizer.momentum, c.optimizer.nesterov, c.optimizer.weight_decay) == (0.9, True,
                                                                                      1e-4)
    assert c.optimizer.lr_ratio == 10.0
    assert c.region_size == ((5 if vgg else 4) if cub else 3)
    assert c.model_options.adl_positions == (("3M 4M 53" if vgg else "30 40 42") if adl else "")
    assert c.model_options.adl_drop_rate == 0.75
    assert c.loss == "softmax" and c.num_classes == 200 and not c.multi_label
    assert c.image_size == ((224, 224) if cub else (64, 64))
    if cub:
        assert (c.resize_size, c.eval_protocol) == (256, "center_crop")


def test_digits_and_multi_mnist_train_both_heads(monkeypatch):
    monkeypatch.setenv(base.MNIST_DIR_ENV, "/data/mnist")
    for name in ("digits", "multi_mnist"):
        _, c = load(name)
        assert tuple(c.heads) == ("sigmoid", "pc_sigmoid") and c.multi_label
    _, c = load("multi_mnist")
    assert c.manual_dir == "/data/mnist"  # INFOCAM_MNIST_DIR: no path of a machine
    monkeypatch.delenv(base.MNIST_DIR_ENV)
    assert load("multi_mnist")[1].manual_dir == ""


@pytest.mark.parametrize("name", CONFIGS)
def test_runlocal_shrinks_to_a_smoke_run(name):
    _, full = load(name)
    _, small = load(name, "runlocal")
    assert small.runlocal and small.num_epochs == 1 and small.max_steps_per_epoch <= 2
    assert small.batch_size <= full.batch_size and small.batch_size % 4 == 0
    assert max(small.image_size) <= 64
    assert small.model == full.model and small.loss == full.loss
    assert base.shrink_for_runlocal(small.copy_and_resolve_references()) == small
    with pytest.raises(ValueError, match="runlocal"):
        load(name, "bogus")


# ----------------------------------------------------------------------------- smoke runs

SINGLE_KEYS = ["top1_cls", "top5_cls"] + [f"{k}/{m}" for k in ("cam", "infocam", "infocam_plus")
                                          for m in ("gt_known_loc", "top1_loc", "max_box_acc",
                                                    "max_box_acc_v2")]
MULTI_KEYS = ["cls_acc", "exact_match"] + [f"digit_acc/{d}" for d in range(10)] + [
    f"{k}/loc_acc" for k in ("cam", "infocam")]
# Compilation dominates a smoke run (VGG16 / ResNet50: 1-2 CPU-minutes each), so by default
# only one representative per code path runs: digits through the launcher (both heads,
# multi-label), cluttered_mnist (single-label digits CNN) and tiny_imagenet_resnet50 (a big
# backbone with synchronised BatchNorm and two learning-rate groups). INFOCAM_FULL_SMOKE=1 runs
# every config.
DEFAULT_SMOKE = ("cluttered_mnist", "tiny_imagenet_resnet50")
FULL_SMOKE = os.environ.get("INFOCAM_FULL_SMOKE") == "1"


def _check_results(path: pathlib.Path, multi_label: bool):
    results = json.loads(path.read_text())
    for key in (MULTI_KEYS if multi_label else SINGLE_KEYS):
        assert key in results, f"{path}: missing {key}"
        value = results[key]
        assert value is not None and 0.0 <= value <= 1.0, f"{path}: {key}={value}"
    for key, value in results.items():
        if key.endswith(("loc", "acc", "cls", "match", "v2")) and value is not None:
            assert 0.0 <= value <= 1.0, f"{path}: {key}={value}"
    assert results["num_images"] > 0


@pytest.mark.parametrize("name", CONFIGS)
def test_runlocal_end_to_end_writes_results(name, tmp_path):
    if name not in DEFAULT_SMOKE and not FULL_SMOKE:
        pytest.skip("smoke runs are compile-bound (1-2 CPU-min each): one per code path runs "
                    "by default, INFOCAM_FULL_SMOKE=1 runs every config")
    from infocam_jax.experiments import training
    _, c = load(name, "runlocal")
    c.dataset = "synthetic"
    c.num_test_examples = 16
    results = training.train_and_evaluate(c, str(tmp_path))
    heads = tuple(c.heads)
    workdirs = [tmp_path / h for h in heads] if heads else [tmp_path]
    for wd in workdirs:
        _check_results(wd / "results.json", c.multi_label)
        assert (wd / "config.json").exists() and (wd / "results.md").exists()
        assert any((wd / "tensorboard").iterdir())
    if heads:
        assert set(results) == set(heads)


def test_launcher_runs_the_digits_main_job_in_runlocal_mode(tmp_path):
    """The README's main job, shrunk: `:runlocal` with an override that must survive."""
    cmd = [sys.executable, "launch/train.py", "--config=configs/digits.py:runlocal",
           "--config.dataset=synthetic",
           "--config.optimizer.learning_rate=0.01", f"--workdir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for head in ("sigmoid", "pc_sigmoid"):
        _check_results(tmp_path / head / "results.json", multi_label=True)
        saved = json.loads((tmp_path / head / "config.json").read_text())
        # runlocal was applied after the overrides, and the override still won.
        assert saved["runlocal"] and saved["max_steps_per_epoch"] == 2
        assert saved["loss"] == head and saved["batch_size"] == 8
        assert math.isclose(saved["optimizer"]["learning_rate"], 0.01)
    assert set(json.loads((tmp_path / "results.json").read_text())) == {"sigmoid", "pc_sigmoid"}
    assert "# Summary over heads" in proc.stdout
    assert re.search(r"\| CAM \|", proc.stdout) and re.search(r"\| infoCAM \|", proc.stdout)


# ----------------------------------------------------------------------------- the one check

@pytest.mark.parametrize("name", CONFIGS + ["methods_cluttered", "imagenet_resnet50",
                                            "imagenet_vgg16_gap"])
def test_every_config_passes_the_one_check(name):
    for arg in (None, "runlocal"):
        checked = base.validate(load(name, arg)[1])
        assert [e.name for e in checked.evals][:2] == ["classification", "localization"]
        assert checked.settings.num_box_thresholds == load(name, arg)[1].num_box_thresholds


@pytest.mark.parametrize("path, value, match", [
    ("dataset", "mnist", r"config.dataset must be one of"),
    ("model", "vgg19", r"config.model must be one of"),
    ("image_size", (28,), r"config.image_size must be two positive ints"),
    ("eval_protocol", "crop", r"config.eval_protocol must be one of"),
    ("num_train_examples", -1, r"config.num_train_examples must be >= 0, got -1"),
    ("max_boxes", 0, r"config.max_boxes must be >= 1, got 0"),
    ("heads", ("softmax",), r"config.heads lists 'softmax'"),
    ("dtype", "float16", r"config.dtype must be one of"),
    ("eval_every_epochs", -1, r"config.eval_every_epochs must be >= 0, got -1"),
    ("optimizer.learning_rate", float("nan"), r"config.optimizer.learning_rate must be a finite"),
    ("optimizer.decay_epochs", 0, r"config.optimizer.decay_epochs must be >= 1, got 0"),
    ("upsample", "nearest", r"config.upsample must be one of"),
    ("cam_threshold", 1.5, r"cam_threshold must be in \[0, 1\)"),
    ("method", "gradcam", r"config.method must be one of"),
])
def test_the_one_check_names_the_field(path, value, match):
    _, c = load("digits")
    *parents, leaf = path.split(".")
    node = c
    for name in parents:
        node = node[name]
    node[leaf] = value
    with pytest.raises(ValueError, match=match):
        base.validate(c)
