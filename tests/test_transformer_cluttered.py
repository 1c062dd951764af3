"""Tests of configs/transformer_cluttered.py: the CPU-scale DeiT on cluttered MNIST (its sizes,
optimiser, map kinds, the one check) and its runlocal smoke run through the method table."""
import importlib.util
import json
import math
import pathlib

from infocam_jax import config as base
from infocam_jax import models
from infocam_jax.experiments import methods_table

REPO = pathlib.Path(__file__).resolve().parents[1]
KINDS = ("cam", "infocam", "infocam_plus", "rollout", "tscam", "gradcam")


def _load(arg=None):
    path = REPO / "configs" / "transformer_cluttered.py"
    spec = importlib.util.spec_from_file_location("cfg_transformer_cluttered", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.get_config(arg)


def test_config_is_the_small_deit_with_six_map_kinds():
    module, c = _load()
    assert c.dataset == "cluttered_mnist" and c.model == "deit_tiny" and not c.multi_label
    assert tuple(c.map_kinds) == KINDS and tuple(c.methods) == ("cam",)
    assert c.model_options.head == "tokens_gap" and c.model_options.depth == 4
    assert c.posthoc_layer == "blocks_3"
    assert c.optimizer.name == "adamw" and c.optimizer.lr_ratio == 1.0
    assert tuple(c.learning_rates) == module.LEARNING_RATES and len(c.learning_rates) >= 2
    assert (c.num_train_examples, c.num_epochs, c.batch_size) == (20000, 3, 64)
    assert "launch/reproduce.py" in module.__doc__ and "Expected runtime:" in module.__doc__
    for arg in (None, "runlocal"):
        checked = base.validate(_load(arg)[1])
        assert checked.settings.map_kinds[0] == "cam"
    # Features on the 8x8 patch grid of a 64x64 canvas; about 0.21 M parameters.
    model = models.create(c.model, c.num_classes, **{
        k: v for k, v in c.model_options.items() if k in module.SIZES})
    import jax
    import jax.numpy as jnp
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 1)))
    n = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(shapes["params"]))
    assert 150_000 < n < 300_000
    logits, features = jax.eval_shape(model.apply, shapes, jnp.zeros((2, 64, 64, 1)))
    assert logits.shape == (2, 10) and features.shape == (2, 8, 8, 64)


def test_runlocal_runs_the_method_table_with_every_kind(tmp_path):
    _, c = _load("runlocal")
    assert c.runlocal and c.num_epochs == 1 and c.max_steps_per_epoch <= 2
    assert len(c.learning_rates) == 1
    c.dataset = "synthetic"
    out = methods_table.reproduce_methods(c, str(tmp_path), seeds=[0], log=lambda s: None)
    record = out["runs"]["cam"][0]
    assert set(record["eval"]["selection"]) == set(KINDS)
    for kind, sel in record["eval"]["selection"].items():
        assert 0.0 <= sel["valsel"] <= 1.0, (kind, sel)
    assert 0.0 <= record["eval"]["test"]["top1_cls"] <= 1.0
    assert (tmp_path / "summary.md").exists()
    run = pathlib.Path(methods_table.run_dir(str(tmp_path), "cam", c.learning_rates[0], 0))
    assert json.loads((run / "config.json").read_text())["model"] == "deit_tiny"
