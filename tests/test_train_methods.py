"""Tests of config.method in training (infocam_jax/methods/, train.state.train_step).

* The step is wired: the loss the pmapped step reports equals the loss of the model on the
  batch transformed by ``methods.has`` / ``methods.cutmix`` with the documented keys, and the
  network methods' loss is their ``Method.loss`` (ACoL, SPG) -- so a transform that is skipped, drawn
  from another key or mixed with the wrong targets fails.
* Bad configs raise a ValueError naming the field before anything is written to the workdir.
* Every method trains a step end to end on the tiny synthetic config.
"""
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import methods, models
from infocam_jax.methods import acol, base, cutmix, has, spg
from infocam_jax.train import optim, trainer
from infocam_jax.experiments import training
from infocam_jax import devices
from infocam_jax.train import state as ts

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import tiny  # noqa: E402  (tests/tiny.py)


def _single_label(**kw):
    c = tiny.tiny_config(multi_label=False, loss="softmax", image_size=(16, 16), **kw)
    return c


def _supports(backbone, method):
    """Whether methods.create_model builds ``method`` on ``backbone`` (the zoo decides)."""
    c = _single_label(method=method, model=backbone)
    try:
        trainer.create_model(c)
    except ValueError:
        return False
    return True


def _one_step(config, seed=0):
    """(reported loss, manual loss, manual loss on the untransformed batch, CutMix's (perm, λ))
    of one pmapped step from fresh variables on one batch."""
    model = trainer.create_model(config)
    rng = np.random.default_rng(seed)
    b = int(config.batch_size)
    images = rng.normal(size=(b, *config.image_size, 1)).astype(np.float32)
    labels = rng.integers(0, int(config.num_classes), size=b).astype(np.int32)
    batch = {"image": images, "label": labels}
    variables = ts.init_variables(model, jax.random.PRNGKey(0), (*config.image_size, 1))
    tx, _ = optim.create_optimizer(config.optimizer, 1,
                                   models.new_layer_mask(config.model, variables["params"]))
    loss_fn = trainer.make_loss_fn(config, None)
    wsol, wsol_options = methods.check_config(config)
    method = wsol.train_step(wsol_options, loss_fn, trainer.make_classification_loss(config, None))
    step = ts.parallelize(lambda s, bt, k: ts.train_step(
        s, bt, k, model=model, tx=tx, loss_fn=loss_fn, multi_label=False, method=method))
    root = jax.random.PRNGKey(7)
    state = devices.replicate(ts.create_train_state(variables, tx))
    _, metrics = step(state, devices.shard(batch, 1), devices.replicate(root))
    reported = float(devices.unreplicate(metrics)["loss"])

    # The same step by hand: step 0, device 0.
    step_key = jax.random.fold_in(root, 0)
    key = jax.random.fold_in(step_key, 0)
    aug_key = jax.random.fold_in(step_key, base.AUGMENT_STREAM)
    opts = config.method_options
    mix = None
    if config.method == "has":
        images = has.hide_and_seek(aug_key, images, opts.has_grid_size, opts.has_drop_rate)
    elif config.method == "cutmix":
        perm_key = jax.random.fold_in(jax.random.fold_in(step_key, base.PERM_STREAM), 0)
        images, perm, lam = cutmix.cutmix(aug_key, images, opts.cutmix_beta, opts.cutmix_prob,
                                          perm_key)
        mix = (perm, lam)
    kwargs = {"labels": labels} if config.method in ("acol", "spg") else {}
    untransformed = batch["image"]

    def by_hand(images):  # under a 1-device pmap: BatchNorm syncs over the "batch" axis
        outputs, _ = model.apply(variables, images, train=True,
                                 rngs={"adl": key, "dropout": jax.random.fold_in(key, 1)},
                                 mutable=["batch_stats"], **kwargs)
        logits = outputs[0]
        if config.method == "cutmix":
            return cutmix.cutmix_loss(loss_fn, logits, batch, *mix)
        if config.method in ("acol", "spg"):
            classification_loss = trainer.make_classification_loss(config, None)
            if config.method == "acol":
                return acol.acol_loss(outputs, labels, classification_loss=classification_loss)
            return spg.spg_loss(outputs, labels,
                                thresholds=spg.SpgOptions.from_config(config).thresholds,
                                classification_loss=classification_loss)
        return loss_fn(logits, batch)

    hand = jax.pmap(by_hand, axis_name=ts.AXIS_NAME)
    manual = hand(jnp.asarray(images)[None])[0]
    plain = hand(jnp.asarray(untransformed)[None])[0]
    return reported, float(manual), float(plain), mix


@pytest.mark.parametrize("method", ["cam", "has", "cutmix", "acol", "spg"])
def test_step_loss_is_the_method_loss_on_the_transformed_batch(method):
    if not _supports("digits_cnn", method):
        pytest.skip(f"methods.create_model has no {method!r} for digits_cnn on this branch")
    c = _single_label(method=method)
    c.method_options.cutmix_beta = 1.0
    reported, manual, plain, mix = _one_step(c)
    np.testing.assert_allclose(reported, manual, rtol=1e-5, atol=1e-6)
    if method in ("has", "cutmix"):
        assert abs(reported - plain) > 1e-4, "the step must see the transformed batch"
    if method == "cutmix":
        # The draw mixed this batch (prob 1) with a non-trivial λ: the label mix matters.
        assert 0.0 < float(mix[1]) < 1.0 and not np.array_equal(mix[0], np.arange(8))


def test_has_step_hides_cells():
    """With drop rate 1 every pixel is hidden: the step's loss is the model's on zeros."""
    c = _single_label(method="has")
    c.method_options.has_drop_rate = 1.0
    reported, manual, plain, _ = _one_step(c)
    np.testing.assert_allclose(reported, manual, rtol=1e-5)
    assert abs(reported - plain) > 1e-4


# ----------------------------------------------------------------------------- bad configs

def _bad(field, value):
    c = _single_label()
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return c


@pytest.mark.parametrize("field, value, match", [
    ("method", "gradcam", r"config.method must be one of"),
    ("method_options.has_drop_rate", 1.5, r"config.method_options.has_drop_rate"),
    ("method_options.has_grid_size", -2, r"config.method_options.has_grid_size"),
    ("method_options.cutmix_beta", 0.0, r"config.method_options.cutmix_beta"),
    ("method_options.cutmix_prob", 2.0, r"config.method_options.cutmix_prob"),
    ("method_options.acol_threshold", -0.1, r"config.method_options.acol_threshold"),
    ("method_options.spg_thresholds", ((0.7, 0.9), (0.5, 0.05), (0.7, 0.1)),
     r"config.method_options.spg_thresholds"),
])
def test_bad_method_config_names_the_field_and_writes_nothing(field, value, match, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with pytest.raises(ValueError, match=match):
        training.train_and_evaluate(_bad(field, value), str(workdir))
    assert os.listdir(workdir) == []
    missing = tmp_path / "never"
    with pytest.raises(ValueError, match=match):
        training.train_and_evaluate(_bad(field, value), str(missing))
    assert not missing.exists()


def test_single_label_methods_reject_multi_label(tmp_path):
    c = tiny.tiny_config(method="acol")  # multi-label pc_sigmoid
    with pytest.raises(ValueError, match=r"config.method='acol'.*config.multi_label"):
        training.train_and_evaluate(c, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_method_impossible_on_backbone_is_refused_before_the_workdir(tmp_path):
    impossible = [(b, m) for b in ("digits_cnn",) for m in ("acol", "spg")
                  if not _supports(b, m)]
    c = _single_label()
    c.model_options.large_feature_map = True  # no large-feature-map variant of digits_cnn
    with pytest.raises(ValueError, match=r"config.model='digits_cnn'.*large_feature_map"):
        training.train_and_evaluate(c, str(tmp_path))
    for backbone, method in impossible:
        with pytest.raises(ValueError, match=rf"config.model={backbone!r}.*{method}"):
            training.train_and_evaluate(_single_label(method=method), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_workdir_of_another_method_is_refused(tmp_path):
    training.train_and_evaluate(_single_label(method="cam"), str(tmp_path))
    with pytest.raises(ValueError, match=r"method='cam'.*config.method='has'"):
        training.train_and_evaluate(_single_label(method="has", num_epochs=2), str(tmp_path))
