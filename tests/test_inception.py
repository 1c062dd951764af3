"""InceptionV3-WSOL as a zoo backbone: one parameter tree for all methods, feature-map and tap
sizes, the learning-rate split, ADL defaults and dropout streams, and the pooling / convolution
helpers it needs (ceil-mode max-pool, count-include-pad average pool, 1x7 convolutions) equal
torch's. Parameter counts and numbers against the reference: tests/test_method_parity.py."""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import methods, models
from infocam_jax.models import layers

# has / cutmix train the cam network.
NETWORK = {"cam": "cam", "adl": "adl", "acol": "acol", "spg": "spg", "has": "cam",
           "cutmix": "cam"}


@functools.lru_cache(maxsize=None)
def _abstract(method, large=True, size=(32, 48), classes=200):
    """(model, variables, outputs) as shapes (jax.eval_shape: no init is run)."""
    model = methods.create_model("inception_v3", classes, method=method, large_feature_map=large)
    x = jnp.zeros((2, *size, 3))

    def both():
        variables = model.init(jax.random.key(0), x)
        return variables, model.apply(variables, x)

    variables, outputs = jax.eval_shape(both)
    return model, variables, outputs


@pytest.mark.parametrize("method", list(NETWORK))
def test_training_only_methods_build_the_cam_network(method):
    model = methods.create_model("inception_v3", 200, method=method, large_feature_map=True)
    assert model == methods.create_model("inception_v3", 200, method=NETWORK[method],
                                         large_feature_map=True)


def test_one_trunk_tree_for_every_method():
    trees = {}
    for method in ("cam", "adl", "acol", "spg"):
        _, variables, _ = _abstract(method)
        flat = jax.tree_util.tree_leaves_with_path(variables)
        trees[method] = {jax.tree_util.keystr(k): a.shape for k, a in flat
                         if k[1].key.startswith(("Conv2d_", "Mixed_"))}
        tops = set(variables["params"])
        extra = {"cam": {"A3_1b", "A3_2b", "head"}, "adl": {"A3_1b", "A3_2b", "head"},
                 "acol": {"acol"}, "spg": {"A3_1b", "A3_2b", "spg"}}[method]
        assert {t for t in tops if not t.startswith(("Conv2d_", "Mixed_"))} == extra
    assert trees["cam"] == trees["adl"] == trees["acol"] == trees["spg"]
    # torchvision names: 70 BasicConv2d units (conv kernel + bn scale/bias + mean/var).
    assert len(trees["cam"]) == 70 * 5
    assert "['params']['Mixed_6e']['branch7x7dbl_5']['conv']['kernel']" in trees["cam"]
    assert "['batch_stats']['Conv2d_4a_3x3']['bn']['var']" in trees["cam"]


@pytest.mark.parametrize("large, size, expected, b1", [
    (True, (224, 224), (28, 28), (28, 28)),
    (True, (32, 48), (4, 6), (4, 6)),      # the reference's SPG side maps at 32x48
    (False, (32, 48), (2, 3), (2, 3)),     # the extra 3x3/2 ceil-mode pool after Mixed_5d
])
def test_feature_map_and_tap_sizes(large, size, expected, b1):
    _, _, out = _abstract("spg", large, size)  # the cam network's neck and trunk, plus taps
    assert out.logits.shape == (2, 200) and out.features.shape == (2, *expected, 1024)
    assert out.logits_b1.shape == (2, *b1) and out.logits_b2.shape == (2, *expected)
    assert out.logits_c.shape == (2, *expected) and out.attention.shape == (2, *size)


@pytest.mark.parametrize("method", ["cam", "spg", "acol"])
def test_new_layer_split_is_the_references(method):
    _, variables, _ = _abstract(method)
    mask = models.new_layer_mask("inception_v3", variables["params"],
                                 layout=methods.get(method).layout)
    for top, sub in mask.items():
        expected = not top.startswith(("Conv2d_", "Mixed_"))
        assert all(leaf == expected for leaf in jax.tree_util.tree_leaves(sub)), top


def test_adl_default_positions_and_dropout_streams():
    model = methods.create_model("inception_v3", 3, method="adl")
    assert model.adl_positions == ("5d", "6e", "A3_2b")
    with pytest.raises(ValueError, match="adl_positions"):
        methods.create_model("inception_v3", 3, method="acol", adl_positions="5d")
    with pytest.raises(ValueError, match="unknown ADL position"):
        methods.create_model("inception_v3", 3, method="cam", adl_positions="7a")
    x = jnp.zeros((1, 32, 48, 3))
    for method, streams in (("cam", {"dropout"}), ("adl", {"adl"})):
        model = methods.create_model("inception_v3", 3, method=method)
        variables = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), x))
        rngs = {s: jax.random.key(1) for s in streams}
        jax.eval_shape(lambda v, m=model, r=rngs: m.apply(
            v, x, train=True, rngs=r, mutable=["batch_stats"]), variables)
        if method == "cam":  # the neck's dropout needs its stream in training
            with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
                jax.eval_shape(lambda v, m=model: m.apply(
                    v, x, train=True, rngs={"adl": jax.random.key(1)},
                    mutable=["batch_stats"]), variables)


@pytest.mark.parametrize("size", [14, 13, 6, 7])
def test_pools_match_torch(size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(size).standard_normal((2, size, size + 3, 4)).astype(np.float32)
    t = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)))
    for padding in (1, 0):
        expected = torch.nn.functional.max_pool2d(t, 3, 2, padding, ceil_mode=True).numpy()
        for impl in ("explicit", "xla"):
            out = layers.max_pool(jnp.asarray(x), 3, 2, padding, impl=impl, ceil_mode=True)
            np.testing.assert_array_equal(np.transpose(np.asarray(out), (0, 3, 1, 2)), expected)
    expected = torch.nn.functional.avg_pool2d(t, 3, 1, 1).numpy()
    out = layers.avg_pool(jnp.asarray(x), 3, 1, 1)
    np.testing.assert_allclose(np.transpose(np.asarray(out), (0, 3, 1, 2)), expected,
                               rtol=1e-6, atol=1e-6)


def test_rectangular_conv_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 8, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 1, 7)).astype(np.float32)  # OIHW, torch layout
    expected = torch.nn.functional.conv2d(torch.from_numpy(np.transpose(x, (0, 3, 1, 2))),
                                          torch.from_numpy(w), padding=(0, 3)).numpy()
    kernel = jnp.asarray(np.transpose(w, (2, 3, 1, 0)))
    out = layers.conv2d(jnp.asarray(x), kernel, 1, (0, 3), impl="explicit")
    np.testing.assert_allclose(np.transpose(np.asarray(out), (0, 3, 1, 2)), expected,
                               rtol=1e-4, atol=1e-4)
    grads = [jax.grad(lambda k: jnp.sum(jnp.sin(layers.conv2d(jnp.asarray(x), k, 1, (0, 3),
                                                              impl))))(kernel)
             for impl in ("explicit", "xla")]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)


def test_plain_train_step_feeds_the_dropout_stream():
    """The CAM / ADL train step (train_state.train_step without a TrainMethod) passes a
    "dropout" key besides "adl": InceptionV3's neck needs it; a step-dependent mask."""
    import flax.linen as nn  # pylint: disable=import-outside-toplevel
    import ml_collections  # pylint: disable=import-outside-toplevel
    import optax  # pylint: disable=import-outside-toplevel

    from infocam_jax import devices  # pylint: disable=import-outside-toplevel
    from infocam_jax.train import trainer, state as ts  # pylint: disable=import-outside-toplevel

    class TinyDropout(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):  # pylint: disable=redefined-outer-name
            feats = nn.Dropout(0.5, deterministic=not train, name="dropout_A4")(x)
            return nn.Dense(3, name="head")(feats.mean((1, 2))), feats

    model = TinyDropout()
    variables = ts.init_variables(model, jax.random.PRNGKey(0), (4, 4, 2))
    tx = optax.sgd(0.0)
    config = ml_collections.ConfigDict(dict(loss="softmax", multi_label=False))
    step = ts.parallelize(lambda s, b, k: ts.train_step(
        s, b, k, model=model, tx=tx, loss_fn=trainer.make_loss_fn(config, None),
        multi_label=False))
    state = devices.replicate(ts.create_train_state(variables, tx))
    key = devices.replicate(jax.random.PRNGKey(1))
    batch = devices.shard({"image": np.ones((2, 4, 4, 2), np.float32),
                            "label": np.zeros(2, np.int32)}, jax.local_device_count())
    seen = []
    for _ in range(2):
        state, metrics = step(state, batch, key)
        seen.append(float(devices.unreplicate(metrics)["loss"]))
    assert np.all(np.isfinite(seen)) and seen[0] != seen[1]  # lr 0: only the mask changed
