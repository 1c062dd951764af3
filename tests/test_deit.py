"""Tests of the DeiT backbone (infocam_jax/models/deit.py) and its weight import.

* Parameter counts of the full-size models (``jax.eval_shape``, nothing computed) match the
  published DeiT sizes and equal a PyTorch twin with timm's names (tests/deit_twin.py, built on
  torch's meta device) exactly.
* A tiny DeiT (2 blocks, 32x32, patch 8) imported from the twin's synthetic state dict gives the
  twin's logits and tokens, for both heads, with and without the distillation token, and at
  another input size (the bicubic position-embedding resampling against torch's).
* CAM, HaS and CutMix train a DeiT one step; ADL, ACoL and SPG are refused naming both.
"""
import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tiny  # noqa: E402  (tests/tiny.py)

from infocam_jax import config as config_lib
from infocam_jax import devices, methods, models
from infocam_jax.models import convert
from infocam_jax.train import optim, trainer
from infocam_jax.train import state as ts

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(patch_size=8, depth=2, embed_dim=48, num_heads=3, img_size=32)
# published sizes (Touvron et al. 2021, Table 1) and the exact counts of timm's models
PUBLISHED = {"deit_tiny": (5.7e6, 5_717_416), "deit_small": (22.1e6, 22_050_664),
             "deit_base": (86.6e6, 86_567_656)}
SIZES = {"deit_tiny": dict(embed_dim=192, num_heads=3), "deit_small": dict(embed_dim=384,
         num_heads=6), "deit_base": dict(embed_dim=768, num_heads=12)}


@pytest.fixture(scope="module")
def twin():
    pytest.importorskip("torch", reason="torch is not installed: DeiT twin parity skipped")
    return pytest.importorskip("deit_twin")


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


class TestParameterCounts:

    @pytest.mark.parametrize("name", sorted(PUBLISHED))
    @pytest.mark.parametrize("distilled", [False, True])
    def test_published_and_twin(self, twin, name, distilled):
        model = models.create(name + "_distilled" * distilled, 1000, head="cls")
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
        ours = _count(shapes)
        approx, exact = PUBLISHED[name]
        torch = twin.torch
        with torch.device("meta"):
            net = twin.TorchDeiT(1000, distilled=distilled, **SIZES[name])
        theirs = sum(p.numel() for p in net.parameters())
        assert ours == theirs
        if not distilled:
            assert ours == exact
            assert abs(ours - approx) < 0.05e6
        # the converter's key map is exactly timm's key set
        keys = convert.key_map(f"{name}{'_distilled' * distilled}_patch16_224",
                               include_head=True)
        assert set(keys) == set(net.state_dict())


def _tiny_pair(twin, head, distilled, seed=0):
    """(our model, converted variables, twin) of the tiny DeiT with the twin's weights."""
    name = "deit_small_distilled" if distilled else "deit_small"
    net = twin.TorchDeiT(5, distilled=distilled, head=head, **TINY).eval()
    state = twin.synthetic_state(net, seed)
    model = models.create(name, 5, head=head, **TINY)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    if head == "tokens_gap" and distilled:  # the token-GAP head has no head_dist
        variables = convert.convert_state_dict(f"{name}_patch16_224", state, variables)
        variables["params"]["head"]["kernel"] = state["head.weight"].T
        variables["params"]["head"]["bias"] = state["head.bias"]
    else:
        variables = convert.convert_state_dict(f"{name}_patch16_224", state, variables,
                                               include_head=True)
    return model, variables, net


class TestTwinParity:

    @pytest.mark.parametrize("head", ["cls", "tokens_gap"])
    @pytest.mark.parametrize("distilled", [False, True])
    @pytest.mark.parametrize("size", [(32, 32), (48, 40)])
    def test_logits_and_tokens(self, twin, head, distilled, size):
        torch = twin.torch
        model, variables, net = _tiny_pair(twin, head, distilled)
        images = np.random.default_rng(1).normal(size=(2, *size, 3)).astype(np.float32)
        logits, features = model.apply(variables, images)
        with torch.no_grad():
            t_logits, t_tokens = net(torch.from_numpy(images).permute(0, 3, 1, 2))
        prefix = 2 if distilled else 1
        h, w = size[0] // 8, size[1] // 8
        t_grid = t_tokens[:, prefix:].reshape(2, h, w, -1).numpy()
        np.testing.assert_allclose(features, t_grid, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits, t_logits.numpy(), rtol=1e-4, atol=1e-4)

    def test_tokens_gap_logits_are_gap_of_features(self, twin):
        model, variables, _ = _tiny_pair(twin, "tokens_gap", False)
        images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
        logits, features = model.apply(variables, images)
        head = variables["params"]["head"]
        np.testing.assert_allclose(
            logits, np.mean(np.asarray(features), (1, 2)) @ head["kernel"] + head["bias"],
            rtol=1e-5, atol=1e-5)
        assert model.logits_from_gap
        assert not models.create("deit_small", 5, head="cls", **TINY).logits_from_gap

    def test_bfloat16_close_to_float32(self):
        m32 = models.create("deit_tiny", 5, **TINY)
        m16 = models.create("deit_tiny", 5, dtype="bfloat16", **TINY)
        images = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
        variables = m32.init(jax.random.key(0), images)
        l32, f32 = m32.apply(variables, images)
        l16, f16 = m16.apply(variables, images)
        chex.assert_trees_all_equal_dtypes((l16, f16), (l32, f32))  # outputs stay float32
        chex.assert_trees_all_equal_dtypes(variables, m16.init(jax.random.key(0), images))
        np.testing.assert_allclose(f16, f32, atol=0.15)
        assert float(jnp.max(jnp.abs(f16 - f32))) > 0  # it really ran in bfloat16


def _deit_config(method):
    c = tiny.tiny_config(multi_label=False, loss="softmax", image_size=(16, 16), method=method,
                         model="deit_tiny")
    c.model_options = dict(patch_size=8, depth=1, embed_dim=16, num_heads=2, img_size=16)
    if method == "cam":  # TS-CAM's optimiser
        c.optimizer.name = "adamw"
    return c


class TestMethods:

    @pytest.mark.parametrize("method, dtype", [("cam", "float32"), ("cam", "bfloat16"),
                                               ("has", "float32"), ("cutmix", "float32")])
    def test_one_train_step(self, method, dtype):
        config = _deit_config(method)
        config.dtype = dtype
        model = trainer.create_model(config)
        variables = ts.init_variables(model, jax.random.key(0), (16, 16, 1))
        tx, _ = optim.create_optimizer(config.optimizer, 1,
                                       models.new_layer_mask(config.model, variables["params"]))
        loss_fn = trainer.make_loss_fn(config, None)
        wsol, options = methods.check_config(config)
        method_ = wsol.train_step(options, loss_fn, trainer.make_classification_loss(config, None))
        step = ts.parallelize(lambda s, bt, k: ts.train_step(
            s, bt, k, model=model, tx=tx, loss_fn=loss_fn, multi_label=False, method=method_))
        rng = np.random.default_rng(0)
        batch = {"image": rng.normal(size=(8, 16, 16, 1)).astype(np.float32),
                 "label": rng.integers(0, 10, 8).astype(np.int32)}
        state = devices.replicate(ts.create_train_state(variables, tx))
        new, metrics = step(state, devices.shard(batch, 1), devices.replicate(jax.random.key(7)))
        assert np.isfinite(float(devices.unreplicate(metrics)["loss"]))
        before = variables["params"]["blocks_0"]["attn"]["qkv"]["kernel"]
        after = devices.unreplicate(new).params["blocks_0"]["attn"]["qkv"]["kernel"]
        assert float(jnp.max(jnp.abs(after - before))) > 0

    @pytest.mark.parametrize("method", ["adl", "acol", "spg"])
    def test_cnn_position_methods_refused(self, method):
        with pytest.raises(ValueError, match=f"method '{method}'.*backbone 'deit_small'"):
            methods.create_model("deit_small", 5, method=method, **TINY)

    def test_new_layers_are_the_heads(self):
        model = models.create("deit_small_distilled", 5, head="cls", **TINY)
        params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
        mask = models.new_layer_mask("deit_small_distilled", params["params"])
        assert {k for k, v in mask.items() if all(jax.tree_util.tree_leaves(v))} == {
            "head", "head_dist"}


@pytest.fixture(scope="module")
def wsol():
    """configs/wsol.py as a module."""
    spec = importlib.util.spec_from_file_location("cfg_wsol", REPO / "configs" / "wsol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestTscamRecipe:

    @pytest.mark.parametrize("dataset, lr, batch, epochs", [("cub", 5e-5, 128, 60),
                                                            ("ilsvrc", 5e-4, 256, 20)])
    def test_config(self, wsol, dataset, lr, batch, epochs):
        c = wsol.get_config(f"deit_small,cam,{dataset}")
        config_lib.validate(c)
        assert (c.model, c.model_options.head, c.image_size, c.resize_size) == (
            "deit_small", "tokens_gap", (224, 224), 256)
        assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.weight_decay,
                c.optimizer.lr_ratio, c.batch_size, c.num_epochs) == (
                    "adamw", lr, 0.05, 1.0, batch, epochs)
        assert "configs/wsol.py:deit_small,cam,cub" in wsol.__doc__

    def test_cnn_position_methods_refused(self, wsol):
        with pytest.raises(ValueError, match="method 'spg' is not available for backbone "
                                             "'deit_small'"):
            wsol.get_config("deit_small,spg,cub")

    def test_adamw_first_step(self):
        """torch.optim.AdamW's first step: p - lr (g / (|g| + eps) + wd p); only kernels
        decay."""
        oc = ml_collections.ConfigDict(dict(name="adamw", learning_rate=0.1, lr_ratio=1.0,
                                            momentum=0.9, nesterov=True, weight_decay=0.05,
                                            decay_epochs=10, decay_factor=0.1))
        tx, _ = optim.create_optimizer(oc, 1)
        rng = np.random.default_rng(0)
        params = {"fc": {"kernel": rng.normal(size=(3, 2)), "bias": rng.normal(size=2)},
                  "tokens": {"cls_token": rng.normal(size=(1, 1, 2))}}
        grads = jax.tree.map(lambda p: rng.normal(size=p.shape), params)
        updates, _ = tx.update(grads, tx.init(params), params)
        for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
            p = params[path[0].key][path[1].key]
            decay = 0.05 * p if path[-1].key == "kernel" else 0.0
            expected = -0.1 * (g / (np.abs(g) + 1e-8) + decay)
            np.testing.assert_allclose(updates[path[0].key][path[1].key], expected,
                                       rtol=1e-5, atol=1e-6)
