"""Every documented error a user can hit: the message names the argument, field or file, and a
rejected training run leaves no checkpoint (nothing half-written) behind.

Covers EvalSettings ranges, merging counts of different settings, the loss / config checks of
train.py, resuming a workdir that holds another run, ``config.pretrained``, malformed dataset
records, ``losses.estimate_priors``, the H·W limit of the box extraction, and the value
checks of every public entry that takes concrete arrays (the evaluation driver and evaluators,
``metrics``, ``boxes``): labels in [0, M), boxes ordered and inside the image, 0/1 masks, score
maps finite and in [0, 1], image / map shapes; each error names the argument, the first
offending index and its value.
"""
import json
import os
import pathlib
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from infocam_jax import boxes, display, losses, metrics, models, posthoc
from infocam_jax import config as config_lib
from infocam_jax.train import checkpoints, optim, trainer
from infocam_jax.experiments import training
from infocam_jax.metrics import arcc, deletion_insertion, faithfulness, multilabel, pxap
from infocam_jax.train import state as ts
from infocam_jax.data import pipeline, sources
from infocam_jax.evaluation import driver, evaluators, region_grid
from infocam_jax.evaluation import pxap as pxap_eval
from infocam_jax.evaluation.settings import EvalSettings
from infocam_jax.models import convert

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import tiny  # noqa: E402  (tests/tiny.py)
import test_evaluate as te  # noqa: E402  (its tiny (logits, features) model and batches)


# ----------------------------------------------------------------------------- evaluation

@pytest.mark.parametrize("field, value, match", [
    ("cam_threshold", -0.1, r"cam_threshold must be in \[0, 1\), got -0.1"),
    ("cam_threshold", 1.0, r"cam_threshold must be in \[0, 1\), got 1.0"),
    ("iou_threshold", 0.0, r"iou_threshold must be in \(0, 1\], got 0.0"),
    ("iou_threshold", 1.5, r"iou_threshold must be in \(0, 1\], got 1.5"),
    ("num_box_thresholds", 0, r"num_box_thresholds must be >= 1, got 0"),
    ("num_classes", 0, r"num_classes and region_size must be >= 1, got 0, 3"),
    ("region_size", 0, r"num_classes and region_size must be >= 1, got 10, 0"),
    ("map_kinds", (), r"map_kinds must be a non-empty subset"),
    ("map_kinds", ("cam", "smoothgrad"), r"map_kinds must be a non-empty subset.*smoothgrad"),
    ("normalize", "zscore", r"normalize must be one of \('minmax', 'max'\), got 'zscore'"),
    ("box_backend", "gpu", r"box_backend must be one of .*, got 'gpu'"),
])
def test_eval_settings_range_errors(field, value, match):
    with pytest.raises(ValueError, match=match):
        EvalSettings(image_size=(8, 8), **{field: value})


def test_eval_settings_multi_label_rejects_infocam_plus():
    with pytest.raises(ValueError,
                       match=r"multi-label evaluation supports map_kinds.*infocam_plus"):
        EvalSettings(image_size=(8, 8), multi_label=True,
                              map_kinds=("cam", "infocam_plus"))


def test_eval_settings_from_config_names_the_bad_field():
    config = ml_collections.ConfigDict(dict(
        image_size=(8, 8), upsample="bicubic", region_size=3, cam_threshold=1.2,
        iou_threshold=0.5, num_box_thresholds=10, multi_label=False, num_classes=5))
    with pytest.raises(ValueError, match="cam_threshold"):
        EvalSettings.from_config(config)


@pytest.mark.parametrize("make, settings", [
    (lambda s: metrics.LocalizationCounts.empty(cam_threshold=s), (0.2, 0.3)),
    (lambda s: metrics.LocalizationCounts.empty(iou_threshold=s), (0.5, 0.7)),
    (lambda s: metrics.BoxAccuracyCounts.empty(np.arange(0, 1, s)), (0.25, 0.5)),
    (lambda s: metrics.BoxAccuracyCounts.empty((0.5,), iou_thresholds=s), ((0.5,), (0.3,))),
    (lambda s: multilabel.MultiLabelCounts.empty(3, cam_threshold=s), (0.2, 0.4)),
])
def test_counts_with_different_settings_refuse_to_merge(make, settings):
    a, b = make(settings[0]), make(settings[1])
    a.merge(a)  # same settings merge
    with pytest.raises(ValueError, match=type(a).__name__) as info:
        a.merge(b)
    assert "metadata" in str(info.value)


# ----------------------------------------------------------------------------- boxes

@pytest.mark.parametrize("fn", [
    lambda m: boxes.largest_box(m, [0.5]),
    lambda m: boxes.max_contour_iou(m, [0.5], jnp.zeros((1, 1, 4), jnp.int32),
                                    jnp.ones((1, 1), bool), multi_contour=True),
])
def test_box_extraction_limits_the_pixel_count(fn):
    """H·W < 2**23 (the union-find packs pixel indices with the level into int32)."""
    too_big = jax.ShapeDtypeStruct((1, 4096, 2048), jnp.float32)
    with pytest.raises(ValueError, match=re.escape("scoremaps must have H * W < 2**23 pixels, "
                                                   "got shape (1, 4096, 2048)")):
        jax.eval_shape(fn, too_big)


# ----------------------------------------------------------------------------- priors

@pytest.mark.parametrize("labels, kwargs, match", [
    ([0, 1], dict(floor=0.5), r"floor must lie in \(0, 0.5\), got 0.5"),
    ([0, 1], dict(floor=0.0), r"floor must lie in \(0, 0.5\), got 0.0"),
    (np.zeros((0,), int), {}, r"labels must be int \[N\] or multi-hot \[N, M\].*\(0,\)"),
    (np.zeros((2, 2, 2), int), {}, r"labels must be int \[N\].*\(2, 2, 2\)"),
    ([0.0, 1.0], {}, r"labels \[N\] must be integers, got dtype float64"),
    ([0, 3], dict(num_classes=3), r"labels must lie in \[0, 3\), got values in \[0, 3\]"),
    ([0, -1], dict(num_classes=3), r"labels must lie in \[0, 3\), got values in \[-1, 0\]"),
    ([0, 2, 2], dict(num_classes=4), r"classes \[1, 3\] never occur in labels.*floor"),
    ([[1, 0, 1], [1, 0, 0]], {}, r"labels \[0, 1\] are never or always present.*floor"),
    ([[1, 0], [0, 1]], dict(num_classes=3),
     r"labels \[N, M\] must have M = num_classes = 3, got shape \(2, 2\)"),
])
def test_estimate_priors_errors(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        losses.estimate_priors(np.asarray(labels), **kwargs)


# ----------------------------------------------------------------------------- records

def _record_config(**overrides):
    c = ml_collections.ConfigDict(dict(
        dataset="synthetic", data_dir="", manual_dir="", num_train_examples=8,
        num_test_examples=8, data_seed=0, image_size=(12, 10), resize_size=0,
        eval_protocol="center_crop", max_boxes=2, model="vgg16_gap", num_classes=5,
        multi_label=False, data_threads=1))
    c.update(overrides)
    return c


def _good_record(channels=3, multi_label=False):
    record = {"image": np.zeros((12, 10, channels), np.uint8), "label": 1,
              "boxes": np.array([[1, 1, 4, 4]], np.float32), "box_labels": np.array([1])}
    if multi_label:
        record["labels"] = np.eye(5, dtype=np.float32)[1]
    return record


@pytest.mark.parametrize("multi_label, change, match", [
    (False, dict(image=np.zeros((12, 10, 1), np.uint8)),
     r"synthetic record 0: image shape \(12, 10, 1\), expected 3 channels"),
    (False, dict(boxes=np.zeros((3, 4), np.float32), box_labels=np.zeros(3, int)),
     r"synthetic record 0 has 3 boxes, more than config.max_boxes=2"),
    (False, dict(box_labels=np.zeros(2, int)), r"synthetic record 0: 1 boxes but 2 box_labels"),
    (False, dict(label=5), r"synthetic record 0: label 5 outside \[0, 5\)"),
    (False, dict(label=-1), r"synthetic record 0: label -1 outside \[0, 5\)"),
    (True, dict(labels=None), r"config.multi_label=True but synthetic records carry no "
                              r"multi-hot 'labels'"),
    (True, dict(labels=np.ones(4, np.float32)),
     r"synthetic record 0: labels shape \(4,\), expected \(5,\)"),
])
def test_malformed_records_name_dataset_record_and_field(multi_label, change, match):
    config = _record_config(multi_label=multi_label,
                            model="digits_cnn" if multi_label else "vgg16_gap")
    opened = pipeline.open_dataset(config)
    record = _good_record(opened.channels, multi_label)
    load = pipeline._example_fn(config, opened, [record], training=False, epoch=0, seed=0)
    load(0)  # the unchanged record loads
    for key, value in change.items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    with pytest.raises(ValueError, match=match):
        load(0)


def test_training_labels_beyond_num_classes():
    with pytest.raises(ValueError, match=r"training labels reach 6, beyond config.num_classes=5"):
        sources._prior_from_labels(np.array([0, 6]), 5, multi_label=False)


# ----------------------------------------------------------------------------- training

def _tiny_config(**overrides):
    """Digits CNN (width 4) on synthetic 16x32 canvases (tests/tiny.py)."""
    return tiny.tiny_config(**overrides)


_INIT_CACHE = {}


@pytest.fixture
def cached_init(monkeypatch):
    """ts.init_variables memoised for this module: it compiles model.init on every call, and the
    errors under test come after it; every test here initialises the same model."""
    real = ts.init_variables

    def init_variables(model, key, image_shape):
        memo = (repr(model), np.asarray(jax.random.key_data(key) if jnp.issubdtype(
            key.dtype, jax.dtypes.prng_key) else key).tobytes(), tuple(image_shape))
        if memo not in _INIT_CACHE:
            _INIT_CACHE[memo] = real(model, key, image_shape)
        return _INIT_CACHE[memo]

    monkeypatch.setattr(ts, "init_variables", init_variables)


def _no_checkpoints(workdir):
    for name in (checkpoints.LATEST_DIR, checkpoints.BEST_DIR):
        assert not os.path.exists(os.path.join(workdir, name)), f"{name}/ was created"
    assert not os.path.exists(os.path.join(workdir, "results.json"))


@pytest.mark.parametrize("overrides, match", [
    (dict(loss="focal"), r"config.loss must be one of softmax, pc_softmax, sigmoid, pc_sigmoid; "
                         r"got 'focal'"),
    (dict(loss="softmax"), r"config.loss='softmax' does not fit config.multi_label=True"),
    (dict(loss="sigmoid", multi_label=False),
     r"config.loss='sigmoid' does not fit config.multi_label=False"),
])
def test_validate_names_the_loss_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        config_lib.validate(_tiny_config(**overrides))


@pytest.mark.parametrize("loss, multi_label", [("pc_sigmoid", True), ("pc_softmax", False)])
def test_make_loss_fn_pc_losses_need_the_prior(loss, multi_label):
    with pytest.raises(ValueError, match=f"loss '{loss}' needs the training label prior"):
        trainer.make_loss_fn(_tiny_config(loss=loss, multi_label=multi_label), None)


@pytest.mark.parametrize("overrides, match", [
    (dict(batch_size=0), r"config.batch_size=0 must be a positive multiple of the number of "
                         r"devices"),
    (dict(num_epochs=0), r"config.num_epochs must be >= 1, got 0"),
])
def test_config_errors_write_nothing(tmp_path, overrides, match):
    """config.validate runs before the workdir is created."""
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        training.train_and_evaluate(_tiny_config(**overrides), str(workdir))
    assert not workdir.exists()


def test_bad_loss_through_train_writes_no_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"config.loss='softmax' does not fit"):
        training.train_and_evaluate(_tiny_config(loss="softmax"), str(workdir))
    _no_checkpoints(workdir)
    assert not workdir.exists()


def _save_run(config, workdir):
    """A finished epoch of `config` in `workdir`, saved the way train_single saves it."""
    model = trainer.create_model(config)
    variables = ts.init_variables(model, jax.random.PRNGKey(0), (16, 32, 1))
    mask = models.new_layer_mask(config.model, variables["params"])
    tx, _ = optim.create_optimizer(config.optimizer, 1, mask)
    state = ts.create_train_state(variables, tx)
    extra = {"epoch": 1, "step": 1, "train_loss": 0.5, "val_accuracy": 0.5,
             "best_val_accuracy": 0.5, "best_epoch": 1, "label_prior": [0.5] * 10,
             "loss": str(config.loss), "model": str(config.model), "num_classes": 10,
             "dataset": "synthetic"}
    ckpt = checkpoints.Checkpointer(str(workdir), 1)
    ckpt.save(1, state.variables, state.opt_state, extra, True)
    ckpt.close()
    (workdir / "config.json").write_text(config.to_json_best_effort(sort_keys=True))


def _listing(workdir):
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                  if "tensorboard" not in p.parts and p.name != "config.json")


def test_resume_into_a_workdir_of_another_run(tmp_path, cached_init):
    workdir = tmp_path / "pc_sigmoid_run"
    _save_run(_tiny_config(), workdir)
    before, config_before = _listing(workdir), (workdir / "config.json").read_text()
    with pytest.raises(ValueError, match=re.escape(
            f"{workdir} holds a run with loss='pc_sigmoid', but config.loss='sigmoid': use "
            f"another --workdir")):
        training.train_and_evaluate(_tiny_config(loss="sigmoid"), str(workdir))
    assert _listing(workdir) == before  # no new checkpoint, no results
    assert checkpoints.Checkpointer(str(workdir), 1).latest_epoch() == 1
    assert json.loads((workdir / "config.json").read_text()) == json.loads(config_before)


def test_pretrained_missing_file(tmp_path, cached_init):
    path = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        training.train_and_evaluate(_tiny_config(pretrained=str(path)), str(tmp_path / "run"))
    _no_checkpoints(tmp_path / "run")


def test_pretrained_unknown_extension(tmp_path, cached_init):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"variables path must end in .npz or .msgpack, got "
                       + re.escape(repr(str(path)))):
        training.train_and_evaluate(_tiny_config(pretrained=str(path)), str(tmp_path / "run"))
    _no_checkpoints(tmp_path / "run")


def test_pretrained_with_wrong_keys_names_them(tmp_path, cached_init):
    path = tmp_path / "wrong_keys.npz"
    np.savez(path, **{"params/bogus/kernel": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"pretrained variables do not match the model: missing "
                       r"\[.*'params/.*unexpected \['params/bogus/kernel'\]") as info:
        training.train_and_evaluate(_tiny_config(pretrained=str(path)), str(tmp_path / "run"))
    _no_checkpoints(tmp_path / "run")
    assert f"config.pretrained={str(path)!r}" in str(info.value)


def test_keep_checkpoints_below_one(tmp_path, cached_init):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"config.keep_checkpoints must be >= 1, got 0"):
        training.train_and_evaluate(_tiny_config(keep_checkpoints=0), str(workdir))
    _no_checkpoints(workdir)


def test_restore_names_the_argument_and_the_directory(tmp_path):
    config = _tiny_config()
    with pytest.raises(ValueError, match=r"which must be 'best' or 'latest', got 'first'"):
        trainer.restore_variables(config, str(tmp_path), "first")
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f"no 'latest' checkpoint under {tmp_path}")):
        trainer.restore_variables(config, str(tmp_path), "latest")
    assert not any(tmp_path.iterdir())


def _eval_config():
    return ml_collections.ConfigDict(dict(
        image_size=(8, 8), upsample="bicubic", region_size=3, cam_threshold=0.2,
        iou_threshold=0.5, num_box_thresholds=10, multi_label=False, num_classes=5))


def test_evaluate_names_missing_batch_keys_and_bad_num_devices():
    batch = {"image": np.zeros((2, 8, 8, 1), np.float32), "label": np.zeros(2, np.int32),
             "valid": np.ones(2, bool)}
    with pytest.raises(ValueError, match=r"batch is missing keys \['boxes', 'box_valid'\]"):
        driver.evaluate(_eval_config(), object(), {}, [batch], num_devices=1)
    n = jax.local_device_count()
    with pytest.raises(ValueError, match=re.escape(f"num_devices must be in [1, {n}], got "
                                                   f"{n + 1}")):
        driver.evaluate(_eval_config(), object(), {}, [batch], num_devices=n + 1)


# ----------------------------------------------------------------------------- values

def _changed(data, key, index, value):
    out = {k: np.array(v, copy=True) for k, v in data.items()}
    out[key][index] = value
    return out


@pytest.fixture(scope="module")
def tiny_eval():
    model = te.TinyNet(te.NUM_CLASSES)
    return model, te.tiny_variables(model), te.make_data()


_BATCH_CASES = [  # bad batches reaching the driver: (key, index, value, message)
    ("label", 3, te.NUM_CLASSES, r"batch 0 of the iterator: batch\['label'\] must lie in "
     r"\[0, 5\) \(M = settings.num_classes\), got batch\['label'\]\[3\] = 5"),
    ("boxes", (2, 0), [9, 1, 3, 6], r"batch\['boxes'\] must satisfy x0 <= x1 and y0 <= y1, "
     r"got batch\['boxes'\]\[2, 0\] = \[9, 1, 3, 6\]"),
    ("boxes", (1, 0), [0, 0, 3, te.SIZE], r"0 <= y0 <= y1 < H = 16 .*\[0, 0, 3, 16\]"),
    ("box_valid", (0, 0), 3, r"batch\['box_valid'\] must be a bool mask \(0 or 1\), got "
     r"batch\['box_valid'\]\[0, 0\] = 3"),
]


@pytest.mark.parametrize("entry", ["driver", "localization", "classification"])
@pytest.mark.parametrize("key, index, value, match", _BATCH_CASES)
def test_bad_batch_values_at_the_driver_and_evaluators(tiny_eval, entry, key, index, value,
                                                       match):
    """Labels == M and x0 > x1 gave localisation numbers silently (MaxBoxAccV2 0.2 -> 0.0)."""
    model, variables, data = tiny_eval
    if key == "box_valid":
        data = {**data, "box_valid": data["box_valid"].astype(np.int32)}
    batch = _changed(data, key, index, value)
    with pytest.raises(ValueError, match=match):
        if entry == "driver":
            driver.evaluate(te.make_config(), model, variables, [batch], num_devices=1)
        else:
            settings = EvalSettings.from_config(te.make_config())
            evaluator = evaluators.REGISTRY[entry](entry, settings, False, True)
            evaluator.run(model, variables, {"test": [batch]}, num_devices=1)


def test_batch_shapes_and_model_classes(tiny_eval):
    model, variables, data = tiny_eval
    short = {**data, "valid": data["valid"][:9]}
    with pytest.raises(ValueError, match=re.escape(
            "batch['image'] must have shape [9, ?, ?, ?] (docs/interfaces.md; M = "
            "settings.num_classes, (H, W) = settings.image_size), got (10, 16, 16, 1)")):
        driver.evaluate(te.make_config(), model, variables, [short], num_devices=1)
    with pytest.raises(ValueError, match=re.escape(
            "the model has 5 classes (logits [B, M]) but settings.num_classes = 7")):
        driver.evaluate(te.make_config(num_classes=7), model, variables, [data], num_devices=1)


@pytest.mark.parametrize("entry", ["driver", "pxap"])
def test_images_of_another_size_than_settings(tiny_eval, entry):
    """Images whose (H, W) is not settings.image_size: the boxes and masks, in image_size
    coordinates, would be scored against maps of another image."""
    model, variables, data = tiny_eval
    batch = {**data, **_pxap_data(data), "image": data["image"][:, :8, :12]}
    with pytest.raises(ValueError, match=re.escape(
            "batch 0 of the iterator: batch['image'] (the images [B, H, W, C]) must have "
            "(H, W) = settings.image_size = (16, 16), got shape (10, 8, 12, 1)")):
        if entry == "driver":
            driver.evaluate(te.make_config(), model, variables, [batch], num_devices=1)
        else:
            pxap_eval.evaluate_counts(_pxap_settings(), model, variables, [batch],
                                      num_devices=1)


class _DropLast(nn.Module):
    """TinyNet whose features (maps) or logits lose the batch's last example."""
    num_classes: int
    drop: str

    @nn.compact
    def __call__(self, x, train=False):
        features = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv")(x))
        logits = nn.Dense(self.num_classes, name="head")(features.mean((1, 2)))
        return (logits, features[:-1]) if self.drop == "features" else (logits[:-1], features)


@pytest.mark.parametrize("entry", ["driver", "pxap"])
@pytest.mark.parametrize("drop, match", [
    ("features", (r"the model's branch 0 features must have shape \[B, h, w, K\] with B = 10 "
                  r"\(the images' batch, images shape \(10, 16, 16, 1\)\), got shape "
                  r"\(9, 8, 8, 8\)")),
    ("logits", r"the model's logits must have shape \[B, M\] with B = 10 .* got shape \(9, 5\)"),
])
def test_model_outputs_of_another_batch_size(tiny_eval, entry, drop, match):
    _, _, data = tiny_eval
    model = _DropLast(te.NUM_CLASSES, drop)
    variables = model.init(jax.random.PRNGKey(0), data["image"][:1])
    with pytest.raises(ValueError, match=match):
        if entry == "driver":
            driver.evaluate(te.make_config(), model, variables, [data], num_devices=1)
        else:
            pxap_eval.evaluate_counts(_pxap_settings(), model, variables, [_pxap_data(data)],
                                      num_devices=1)


def _pxap_settings():
    return EvalSettings(image_size=(te.SIZE, te.SIZE), map_kinds=("cam",),
                        num_box_thresholds=10, num_classes=te.NUM_CLASSES)


def _pxap_data(data):
    rng = np.random.default_rng(5)
    n = len(data["valid"])
    return {"image": data["image"], "label": data["label"], "valid": data["valid"],
            "mask": rng.uniform(size=(n, te.SIZE, te.SIZE)) < 0.3,
            "ignore": rng.uniform(size=(n, te.SIZE, te.SIZE)) < 0.1}


_PXAP_CASES = [  # bad PxAP batches: (key, change, message)
    ("label", lambda d: _changed(d, "label", 4, te.NUM_CLASSES),
     (r"batch 0 of the iterator: batch\['label'\] must lie in \[0, 5\) \(M = "
      r"settings.num_classes\), got batch\['label'\]\[4\] = 5")),
    ("label", lambda d: {**d, "label": d["label"].astype(np.float32)},
     r"batch\['label'\] must be an integer array, got dtype float32"),
    ("mask", lambda d: _changed({**d, "mask": d["mask"].astype(np.uint8)}, "mask", (2, 3, 4), 2),
     r"batch\['mask'\] must be a bool mask \(0 or 1\), got batch\['mask'\]\[2, 3, 4\] = 2"),
    ("ignore", lambda d: {**d, "ignore": np.full(d["ignore"].shape, 0.5, np.float32)},
     r"batch\['ignore'\] must be a bool mask \(0 or 1\), got batch\['ignore'\]\[0, 0, 0\] = 0.5"),
    ("mask", lambda d: {**d, "mask": d["mask"][:, :8]},
     r"batch\['mask'\] must have shape \[10, 16, 16\] .*got \(10, 8, 16\)"),
    ("valid", lambda d: _changed({**d, "valid": d["valid"].astype(np.int32)}, "valid", 1, 3),
     r"batch\['valid'\] must be a bool mask \(0 or 1\), got batch\['valid'\]\[1\] = 3"),
]


@pytest.mark.parametrize("key, change, match", _PXAP_CASES)
def test_bad_pxap_batches(tiny_eval, key, change, match):
    """PxAP's evaluator checks its batches with step.check_batch (its own keys)."""
    model, variables, data = tiny_eval
    with pytest.raises(ValueError, match=match):
        pxap_eval.evaluate_counts(_pxap_settings(), model, variables,
                                  [change(_pxap_data(data))], num_devices=1)


def test_pxap_padding_rows_are_not_checked(tiny_eval):
    """Values of examples marked invalid (padding) are not checked, as in the driver."""
    model, variables, data = tiny_eval
    batch = _pxap_data(data)
    batch["valid"][-1] = False
    batch["label"][-1] = -1
    batch["mask"] = batch["mask"].astype(np.uint8)
    batch["mask"][-1] = 7
    counts = pxap_eval.evaluate_counts(_pxap_settings(), model, variables, [batch],
                                       num_devices=1)
    assert int(np.sum(counts.positive)) == int(batch["mask"][:-1].sum())


_MAPS = np.full((2, 8, 8), 0.5, np.float32)
_GT = np.array([[[0, 0, 3, 3]], [[1, 1, 4, 4]]], np.int32)
_OK = np.ones((2, 1), bool)


@pytest.mark.parametrize("call, match", [
    (lambda: metrics.localization_counts(np.zeros((2, 3)), [1, 3], _MAPS, _GT, _OK),
     r"labels must lie in \[0, 3\) \(M = logits.shape\[1\]\), got labels\[1\] = 3"),
    (lambda: metrics.max_box_accuracy(_MAPS, _changed({"g": _GT}, "g", (1, 0), [1, 4, 4, 1])["g"],
                                      _OK, [0.5]),
     r"gt_boxes must satisfy x0 <= x1 and y0 <= y1, got gt_boxes\[1, 0\] = \[1, 4, 4, 1\]"),
    (lambda: metrics.max_box_accuracy_v2(_MAPS, _GT + 4, _OK, [0.5]),
     r"< W = 8 and 0 <= y0 <= y1 < H = 8 \(inside the 8 x 8 image\), got gt_boxes\[1, 0\] "
     r"= \[5, 5, 8, 8\]"),
    (lambda: metrics.gt_known_loc_correct(_changed({"m": _MAPS}, "m", (1, 2, 3), np.inf)["m"],
                                          _GT, _OK),
     r"scoremaps must lie in \[0, 1\] and be finite .*got scoremaps\[1, 2, 3\] = inf"),
    (lambda: multilabel.multilabel_counts(
        np.zeros((2, 3)), np.eye(3)[:2], _MAPS[:, None], np.array([[0], [4]]), _OK, _GT,
        np.zeros((2, 1), int), _OK), r"slot_labels\[1, 0\] = 4"),
    (lambda: boxes.largest_box(_changed({"m": _MAPS}, "m", (0, 7, 1), -0.5)["m"], [0.5]),
     r"scoremaps must lie in \[0, 1\] and be finite .*got scoremaps\[0, 7, 1\] = -0.5"),
    (lambda: boxes.max_contour_iou(_MAPS, [0.5], _GT - 2, _OK, multi_contour=True),
     r"gt_boxes must satisfy 0 <= x0 .*got gt_boxes\[0, 0\] = \[-2, -2, 1, 1\]"),
    (lambda: pxap.pixel_counts(_changed({"m": _MAPS}, "m", (1, 0, 2), np.nan)["m"], _MAPS > 0),
     r"scoremaps must lie in \[0, 1\] and be finite .*got scoremaps\[1, 0, 2\] = nan"),
    (lambda: pxap.pxap(_MAPS + 0.75, _MAPS > 0),
     r"scoremaps must lie in \[0, 1\] and be finite .*got scoremaps\[0, 0, 0\] = 1.25"),
    (lambda: pxap.pixel_counts(_MAPS, _changed({"f": np.ones((2, 8, 8), int)}, "f", (0, 1, 1),
                                               2)["f"]),
     r"foreground must be a bool mask \(0 or 1\), got foreground\[0, 1, 1\] = 2"),
    (lambda: pxap.pixel_counts(_MAPS, _MAPS > 0, np.full((2, 8, 8), -1)),
     r"ignore must be a bool mask \(0 or 1\), got ignore\[0, 0, 0\] = -1"),
    (lambda: pxap.pixel_counts(_MAPS, _MAPS > 0, valid=np.array([1, 2])),
     r"valid must be a bool mask \(0 or 1\), got valid\[1\] = 2"),
    (lambda: pxap.pixel_counts_from_bins(_changed({"b": np.zeros((2, 8, 8), np.int32)}, "b",
                                                  (1, 7, 7), 12)["b"], _MAPS > 0,
                                         thresholds=np.arange(0, 1, 0.1)),
     r"bins must lie in \[0, T \+ 2\) = \[0, 12\), got bins\[1, 7, 7\] = 12"),
    (lambda: multilabel.counts_from_slots(np.ones((2, 3), bool), _OK[:, 0], _OK, [[1], [3]],
                                          _OK),
     (r"slot_labels must lie in \[0, 3\) \(M = cls_correct.shape\[1\]\), got "
      r"slot_labels\[1, 0\] = 3")),
    (lambda: multilabel.counts_from_slots(np.ones((2, 3), bool), [1, 2], _OK, [[1], [2]], _OK),
     r"valid must be a bool mask \(0 or 1\), got valid\[1\] = 2"),
    (lambda: faithfulness.explanation_images(np.ones((2, 8, 8, 1)), _MAPS * 3),
     r"scoremaps must lie in \[0, 1\] and be finite .*got scoremaps\[0, 0, 0\] = 1.5"),
    (lambda: faithfulness.confidence_counts(
        lambda x: jnp.zeros((x.shape[0], 3)), np.ones((2, 8, 8, 1)),
        _changed({"m": _MAPS}, "m", (1, 4, 4), -np.inf)["m"], [0, 1]),
     r"scoremaps must lie in \[0, 1\] and be finite .*got scoremaps\[1, 4, 4\] = -inf"),
])
def test_bad_values_at_metrics_and_boxes(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("key, index, value, match", [
    ("box_labels", (2, 0), 3, (r"batch 0 of batches: batch\['box_labels'\] must lie in "
                               r"\[0, 3\) \(M = settings.num_classes\), got "
                               r"batch\['box_labels'\]\[2, 0\] = 3")),
    ("labels", (1, 2), 0.5, (r"batch\['labels'\] must be a bool mask \(0 or 1\), got "
                             r"batch\['labels'\]\[1, 2\] = 0.5")),
    ("boxes", (0, 0), [5, 5, 4, 9], (r"batch\['boxes'\] must satisfy x0 <= x1 and y0 <= y1, "
                                     r"got batch\['boxes'\]\[0, 0\] = \[5, 5, 4, 9\]")),
])
def test_bad_batches_at_the_multilabel_grid(key, index, value, match):
    """region_grid's (map, R) x threshold step checks its host batches as the driver does."""
    model = te.TinyNet(3)
    settings = EvalSettings.from_config(te.make_config(num_classes=3, multi_label=True))
    kinds_r, thresholds = (("cam", 1),), (0.5,)
    grid_step = region_grid.make_multilabel_grid_step(settings, model, kinds_r=kinds_r,
                                                      thresholds=thresholds)
    batch = _changed(te._multi_label_data(), key, index, value)
    with pytest.raises(ValueError, match=match):
        region_grid.multilabel_grid(grid_step, {}, [batch], kinds_r=kinds_r,
                                    thresholds=thresholds)


# --- post-hoc gradient-map zoo (issue 29): options of the new maps -------------------------


@pytest.fixture(scope="module")
def zoo_net():
    """digits_cnn (width 2, M = 5) on 2 images 16x16: (model, variables, images, targets)."""
    model = models.create("digits_cnn", 5, width=2)
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    return model, model.init(jax.random.key(1), images), images, jnp.array([1, 4])


@pytest.mark.parametrize("method, options, match", [
    ("fem", {"eigen_smooth": True}, r"unknown option\(s\) \['eigen_smooth'\] for method 'fem'"),
    ("kpcacam", {"k": 2}, r"unknown option\(s\) \['k'\] for method 'kpcacam'"),
    ("randomcam", {"key": 1.5}, r"key must be an int seed or one JAX PRNG key .*got 1.5"),
    ("randomcam", {"key": "seed"}, r"key must be .*got 'seed'"),
    ("randomcam", {"key": jax.random.split(jax.random.key(0))}, r"key must be"),
    ("smoothgradcampp", {"key": True}, r"key must be .*got True"),
    ("smoothgradcampp", {"num_samples": 0}, r"num_samples must be a Python int >= 1.*got 0"),
    ("smoothgradcampp", {"std": -0.1}, r"std must be a number >= 0, got -0.1"),
    ("kpcacam", {"kernel": "laplace"}, r"kernel must be one of .*got 'laplace'"),
    ("kpcacam", {"gamma": 0.0}, r"gamma must be None or a number > 0, got 0.0"),
    ("fem", {"k": "2"}, r"k must be a real number, got '2'"),
    ("finercam", {"comparison_ranks": (0, 1)}, r"comparison_ranks must be .*\[1, 5\).*got \(0, 1\)"),
    ("finercam", {"comparison_ranks": (5,)}, r"comparison_ranks must be .*got \(5,\)"),
    ("finercam", {"comparison_ranks": ()}, r"comparison_ranks must be .*got \(\)"),
    ("finercam", {"alpha": None}, r"alpha must be a real number, got None"),
    ("gradcam", {"eigen_smooth": 1}, r"eigen_smooth must be a bool, got 1"),
    ("fullgrad", {"layer": "conv2_1"}, r"layer must be 'features' for FullGrad .*got 'conv2_1'"),
    ("shapleycam", {"layer": "conv9"}, r"layer 'conv9' is not a module path"),
])
def test_posthoc_zoo_bad_options(zoo_net, method, options, match):
    model, variables, images, targets = zoo_net
    with pytest.raises(ValueError, match=match):
        posthoc.compute(method, model, variables, images, targets, **options)


# --------------------------------------------------------------------------------------------
# Post-hoc maps as a pytorch-grad-cam user calls them (issue 29): method, layer, options,
# targets, display, weight import
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def posthoc_net():
    """digits_cnn (width 4, M = 5) on two 16x16 images."""
    model = models.create("digits_cnn", 5, width=4)
    images = np.random.default_rng(0).standard_normal((2, 16, 16, 1)).astype(np.float32)
    return model, jax.jit(model.init)(jax.random.key(0), images), images


_POSTHOC_CASES = [
    (dict(method="gradkam"), r"method must be one of \('gradcam', .*\), got 'gradkam'"),
    (dict(layer="layer9_9"), r"layer 'layer9_9' is not a module path of this model; valid "
                             r"layers: features, conv1_1, "),
    (dict(layer="layer3[9]"), r"layer 'layer3\[9\]' \(a torch spelling, read as our path "
                              r"'layer3_9'\) is not a module path of this model; valid layers: "
                              r"features, conv1_1, "),
    (dict(layer="features.28"), r"layer 'features.28' \(a torch spelling, read as our path "
                                r"'features/28'\) is not a module path"),
    (dict(chunk_size=4), r"unknown option\(s\) \['chunk_size'\] for method 'gradcam'; valid: "
                         r"layer, relu"),
    (dict(targets=np.array([1, 7])), r"targets must lie in \[0, 5\) \(the model's number of "
                                     r"classes M\), got targets\[1\] = 7"),
    (dict(targets=np.array([1, 2, 3])), r"targets must have shape \[B\] = \(2,\), got shape "
                                        r"\(3,\)"),
    (dict(targets=np.array([[1, 9], [2, -1]])), r"targets must lie in \[0, 5\) \(the model's "
                                                r"number of classes M; -1 pads\), got "
                                                r"targets\[0, 1\] = 9"),
    (dict(targets=np.array([[1, -2], [2, -1]])), r"got targets\[0, 1\] = -2"),
    (dict(targets=np.ones((2, 4), bool)), r"targets as a bool mask must have shape \[B, M\] = "
                                          r"\(2, 5\), got \(2, 4\)"),
    (dict(targets=lambda z: z[:2]), r"targets \(a callable of the logits \[M\]\) must return a "
                                    r"scalar, got shape \(2,\)"),
]


@pytest.mark.parametrize("kwargs, match", _POSTHOC_CASES)
def test_posthoc_bad_input(posthoc_net, kwargs, match):
    model, variables, images = posthoc_net
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "gradcam")
    targets = kwargs.pop("targets", None)
    with pytest.raises(ValueError, match=match):
        posthoc.compute(method, model, variables, images, targets, **kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: display.overlay(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4)), image_weight=1.5),
     r"image_weight must lie in \[0, 1\], got 1.5"),
    (lambda: display.overlay(np.full((1, 4, 4, 3), 255.0), np.zeros((1, 4, 4))),
     r"images must lie in \[0, 1\] .*got images\[0, 0, 0, 0\] = 255.0"),
    (lambda: display.overlay(np.zeros((1, 4, 4, 3)), np.zeros((1, 2, 2))),
     r"maps must have shape \[B, H, W\] = \(1, 4, 4\) \(the images'; see display.scale_maps\), "
     r"got \(1, 2, 2\)"),
    (lambda: display.scale_maps(np.zeros((1, 2, 2)), (0, 4)),
     r"size must be \(H, W\) with H, W >= 1, got \(0, 4\)"),
    (lambda: display.scale_maps(np.zeros(3), (4, 4)),
     r"maps must have shape \[..., h, w\] \(rank >= 2\), got \(3,\)"),
    (lambda: convert.from_torch("resnet18", {}),
     r"arch must be one of \('vgg16', 'resnet50', 'inception_v3', 'deit_tiny_patch16_224', .*\) "
     r"\(torchvision's / timm's names\), got 'resnet18'"),
    (lambda: convert.from_torch("resnet50", {"conv1.weight": np.zeros((64, 3, 7, 7))}),
     r"num_classes is required when the head is not imported \(drop_head=False, head keys "
     r"present: False\)"),
])
def test_display_and_import_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()




# Deletion / insertion, complexity and their eval settings (tests/test_faithfulness_zoo.py).
def _linear_logits(x):
    return jnp.zeros((x.shape[0], 3)) + x.reshape(x.shape[0], -1)[:, :3]


@pytest.mark.parametrize("call, match", [
    (lambda: deletion_insertion.causal_curves(_linear_logits, np.ones((2, 8, 8, 1)), _MAPS,
                                              [0, 1], "removal"),
     r"mode must be one of \('deletion', 'insertion'\), got 'removal'"),
    (lambda: deletion_insertion.causal_curves(_linear_logits, np.ones((2, 8, 8, 1)), _MAPS,
                                              [0, 1], "insertion", baseline="mean"),
     r"baseline must be one of \('zeros', 'blur'\), got 'mean'"),
    (lambda: deletion_insertion.causal_curves(_linear_logits, np.ones((2, 8, 8, 1)), _MAPS,
                                              [0, 1], "deletion", steps=0),
     r"steps must be an int >= 1, got 0"),
    (lambda: deletion_insertion.causal_curves(_linear_logits, np.ones((2, 8, 8, 1)), _MAPS,
                                              [0, 1], "deletion", chunk_size=2.5),
     r"chunk_size must be an int >= 1, got 2.5"),
    (lambda: deletion_insertion.causal_curves(_linear_logits, np.ones((2, 8, 8, 1)),
                                              np.ones((2, 8, 7)), [0, 1], "deletion"),
     r"scoremaps must have shape \[B, H, W\] = \(2, 8, 8\) \(the images'\), got \(2, 8, 7\)"),
    (lambda: deletion_insertion.causal_curves(_linear_logits, np.ones((8, 8, 1)), _MAPS,
                                              [0, 1], "deletion"),
     r"images must have shape \[B, H, W, C\] \(rank 4\), got \(8, 8, 1\)"),
    (lambda: deletion_insertion.CausalCounts.empty(64, "deletion", 20).add(np.ones((20, 2))),
     r"curves must have shape \[J \+ 1, B\] = \(17, B\), got \(20, 2\)"),
    (lambda: deletion_insertion.blur_kernel(10, 5.0), r"size must be odd, got 10"),
    (lambda: deletion_insertion.blur_kernel(11, 0.0), r"sigma must be > 0, got 0.0"),
    (lambda: faithfulness.complexity_counts(np.ones((8, 8))),
     r"scoremaps must have shape \[B, H, W\] \(rank 3\), got \(8, 8\)"),
])
def test_bad_input_at_deletion_insertion_and_complexity(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("field, value, match", [
    ("causal_steps", 0, r"causal_steps must be an int >= 1, got 0"),
    ("causal_chunk_size", True, r"causal_chunk_size must be an int >= 1, got True"),
    ("deletion_baseline", "blurred",
     r"deletion_baseline must be one of \('zeros', 'blur'\), got 'blurred'"),
    ("insertion_baseline", None, r"insertion_baseline must be one of \('zeros', 'blur'\), got None"),
    ("faithfulness", ("deletion", "rise"), r"faithfulness must be distinct names from "),
])
def test_eval_settings_name_the_faithfulness_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        EvalSettings(image_size=(8, 8), **{field: value})


def test_validate_names_the_causal_config_field():
    with pytest.raises(ValueError, match=r"config: causal_steps must be an int >= 1, got -3"):
        config_lib.validate(_tiny_config(causal_steps=-3))


@pytest.mark.parametrize("call, match", [
    (lambda: arcc.pearson_coherency(_MAPS, _MAPS[:1]),
     r"maps must be two \[B, H, W\] arrays of one shape, got \(2, 8, 8\), \(1, 8, 8\)"),
    (lambda: arcc.ArccCounts.empty().add(np.ones(3), np.ones(2)),
     r"arcc and coherency must have one shape \[B\], got \(3,\), \(2,\)"),
    (lambda: arcc.coherency_per_image(lambda x, y: _MAPS, np.ones((2, 8, 8, 1)), _MAPS * 3,
                                      [0, 1]),
     r"scoremaps must lie in \[0, 1\] and be finite .*got scoremaps\[0, 0, 0\] = 1.5"),
])
def test_bad_input_at_arcc(call, match):
    with pytest.raises(ValueError, match=match):
        call()




# --------------------------------------------------------------------------------------------
# Post-hoc perturbation, guided and factorisation maps, aug_smooth
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def posthoc_small():
    model = models.create("digits_cnn", 5, width=4)
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    return model, jax.jit(model.init)(jax.random.key(1), images), images, jnp.array([1, 4])


@pytest.mark.parametrize("call, match", [
    (lambda m, v, x, t: posthoc.ablationcam(m, v, x, t, chunk_size=0),
     "chunk_size must be >= 1, got 0"),
    (lambda m, v, x, t: posthoc.sscam(m, v, x, t, num_samples=0),
     "num_samples must be >= 1, got 0"),
    (lambda m, v, x, t: posthoc.iscam(m, v, x, t, num_samples=1.5),
     r"num_samples must be a Python int >= 1 \(static\), got 1.5"),
    (lambda m, v, x, t: posthoc.sscam(m, v, x, t, std=-1.0),
     "std must be a finite float >= 0, got -1.0"),
    (lambda m, v, x, t: posthoc.sscam(m, v, x, t, std=float("nan")), "std must be"),
    (lambda m, v, x, t: posthoc.sscam(m, v, x, t, key="seven"),
     "key must be an int seed or a scalar typed PRNG key"),
    (lambda m, v, x, t: posthoc.sscam(m, v, x, t, key=jax.random.PRNGKey(0)),
     "key must be"),
    (lambda m, v, x, t: posthoc.iscam(m, v, x, t.at[0].set(5)), r"targets must lie in \[0, 5\)"),
    (lambda m, v, x, t: posthoc.compute("gradcam", m, v, x, t, aug_smooth=1),
     "aug_smooth must be a Python bool"),
    (lambda m, v, x, t: posthoc.compute("gradcam", m, v, x, t[:1], aug_smooth=True),
     r"targets must have shape \[B\] = \(2,\), got \(1,\)"),
    (lambda m, v, x, t: posthoc.compute("guided_backprop", m, v, x, t, layer="conv2_2"),
     r"unknown option\(s\) \['layer'\] for method 'guided_backprop'"),
    (lambda m, v, x, t: posthoc.guided_backprop(te.TinyNet(5), v, x, t),
     "guided backpropagation needs a model with an `activation` field"),
    (lambda m, v, x, t: posthoc.guided_gradcam(m, v, x, t, layer="conv9"), "layer"),
    (lambda m, v, x, t: posthoc.deep_feature_factorization(m, v, x, n_components=0),
     "n_components must be a Python int >= 1"),
    (lambda m, v, x, t: posthoc.deep_feature_factorization(m, v, x[0]), "images"),
    (lambda m, v, x, t: posthoc.register("x", "X", output="maps"),
     r"output must be one of \('map', 'image'\), got 'maps'"),
])
def test_bad_posthoc_zoo_input(posthoc_small, call, match):
    with pytest.raises(ValueError, match=match):
        call(*posthoc_small)




# DeiT (models/deit.py), its weight import and TS-CAM's optimiser.
_DEIT = dict(patch_size=8, depth=1, embed_dim=16, num_heads=2, img_size=16)


@pytest.mark.parametrize("call, match", [
    (lambda: models.create("deit_small", 5, head="gap"),
     r"head must be one of \('tokens_gap', 'cls'\), got 'gap'"),
    (lambda: models.create("deit_tiny", 5, patch_size=0),
     r"patch_size must be a positive int, got 0"),
    (lambda: models.create("deit_tiny", 5, mlp_ratio=-1.0),
     r"mlp_ratio must be a positive number, got -1.0"),
    (lambda: models.create("deit_tiny", 5, embed_dim=10, num_heads=3),
     r"embed_dim \(10\) must be a multiple of num_heads \(3\)"),
    (lambda: models.create("deit_tiny", 5, img_size=20, patch_size=8),
     r"img_size \(20\) must be a multiple of patch_size \(8\)"),
    (lambda: models.create("deit_tiny", 5, width=4),
     r"unknown option\(s\) \['width'\] for model 'deit_tiny'"),
    (lambda: models.create("deit_tiny", 5, large_feature_map=True),
     r"large_feature_map=True is not defined for deit_tiny"),
    (lambda: models.create("deit_tiny", 5, **_DEIT).init(jax.random.key(0),
                                                         jnp.zeros((1, 20, 16, 3))),
     r"images must have H and W divisible by patch_size=8, got shape \(1, 20, 16, 3\)"),
    (lambda: convert.key_map("deit_small_patch16_224", layout="erasing"),
     r"layout 'erasing' is not defined for DeiT state dicts"),
    (lambda: optim.create_optimizer(ml_collections.ConfigDict(dict(
        name="adam", learning_rate=0.1, lr_ratio=1.0, momentum=0.9, nesterov=True,
        weight_decay=0.0, decay_epochs=1, decay_factor=0.1)), 1),
     r"optimizer.name must be one of \('sgd', 'adamw'\), got 'adam'"),
])
def test_bad_deit_options(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _deit(head="tokens_gap"):
    model = models.create("deit_tiny", 3, head=head, **_DEIT)
    return model, model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize("call, match", [
    (lambda: posthoc.compute("gradcam", *_deit("cls"), jnp.zeros((1, 16, 16, 3)), [0]),
     r"layer 'features' needs logits = GAP\(features\) @ head .*name a block, e.g. "
     r"layer='blocks_11'"),
    (lambda: posthoc.compute("tscam", *_deit("cls"), jnp.zeros((1, 16, 16, 3)), [0]),
     r"tscam needs the token-GAP head"),
    (lambda: posthoc.compute("rollout", *_deit(), jnp.zeros((1, 16, 16, 3)), [0],
                             layer="patch_embed"),
     r"layer 'patch_embed' holds no attention module; valid layers: features, blocks_0"),
    (lambda: posthoc.compute("rollout", *_deit(), jnp.zeros((1, 16, 16, 3)), [3]),
     r"targets"),
    (lambda: posthoc.compute("rollout", models.create("digits_cnn", 3, width=4),
                             models.create("digits_cnn", 3, width=4).init(
                                 jax.random.key(0), jnp.zeros((1, 16, 16, 1))),
                             jnp.zeros((1, 16, 16, 1)), [0]),
     r"attention maps need a transformer .* this model sows none"),
])
def test_bad_deit_maps(call, match):
    with pytest.raises(ValueError, match=match):
        call()
