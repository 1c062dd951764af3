"""Tests of infocam_jax.models: shapes, parameter counts, ADL, BatchNorm modes, jit, seeds."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import models
from infocam_jax.models import adl as adl_lib
from infocam_jax.models import layers


def _param_count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def _abstract_variables(model, shape):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))


# torchvision: vgg16 `features` has 14,714,688 parameters; conv6 (3x3, 512->1024) adds
# 4,719,616; resnet50 has 25,557,032 of which fc (2048->1000) is 2,049,000.
@pytest.mark.parametrize("name,num_classes,expected", [
    ("vgg16_gap", 1000, 14_714_688 + 4_719_616 + 1024 * 1000 + 1000),   # 20,459,304
    ("vgg16_gap", 200, 19_639_304),
    ("resnet50", 1000, 25_557_032),
    ("resnet50", 200, 25_557_032 - 2_049_000 + 2048 * 200 + 200),      # 23,917,832
    # 3x3 convs 1->16, 16->32, 32->32, 32->64 without biases, each + BN scale/bias; Dense 64->10.
    ("digits_cnn", 10, 144 + 32 + 4_608 + 64 + 9_216 + 64 + 18_432 + 128 + 650),   # 33,338
])
def test_parameter_counts_match_torchvision(name, num_classes, expected):
    channels = 1 if name == "digits_cnn" else 3
    variables = _abstract_variables(models.create(name, num_classes), (1, 64, 64, channels))
    assert _param_count(variables["params"]) == expected


def test_resnet_batch_stats_count():
    variables = _abstract_variables(models.create("resnet50", 10), (1, 64, 64, 3))
    # 53 BatchNorm layers; running mean+var = 2 x (BN weight count).
    bn_scale = [a for p, a in jax.tree_util.tree_leaves_with_path(variables["params"])
                if p[-1].key == "scale"]
    assert len(bn_scale) == 53
    assert _param_count(variables["batch_stats"]) == 2 * _param_count(bn_scale)


@pytest.mark.parametrize("name,channels", [("vgg16_gap", 1024), ("resnet50", 2048)])
@pytest.mark.parametrize("size,fmap", [(224, 14), (64, 4)])
def test_output_shapes_and_feature_resolution(name, channels, size, fmap):
    model = models.create(name, 200)
    x = jnp.zeros((2, size, size, 3), jnp.float32)
    variables = _abstract_variables(model, (2, size, size, 3))
    logits, features = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert logits.shape == (2, 200) and logits.dtype == jnp.float32
    assert features.shape == (2, fmap, fmap, channels) and features.dtype == jnp.float32
    assert models.classifier_kernel(variables).shape == (channels, 200)


@pytest.fixture(scope="module")
def digits():
    model = models.create("digits_cnn", 10)
    x = jax.random.uniform(jax.random.key(1), (3, 28, 56, 1))
    init = jax.jit(lambda key: model.init(key, x))  # one compilation for every seed
    return model, init(jax.random.key(0)), x, init


def test_digits_shapes_and_gap_consistency(digits):
    model, variables, x, _ = digits
    logits, features = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    chex.assert_shape(logits, (3, 10))
    chex.assert_shape(features, (3, 7, 14, 64))
    kernel = models.classifier_kernel(variables)
    chex.assert_shape(kernel, (64, 10))
    expected = (np.asarray(features).mean(axis=(1, 2)) @ np.asarray(kernel)
                + np.asarray(variables["params"]["head"]["bias"]))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,fmap", [((1, 64, 64, 1), (16, 16)), ((1, 96, 96, 1), (24, 24))])
def test_digits_other_input_sizes(shape, fmap):
    model = models.create("digits_cnn", 1)
    variables = _abstract_variables(model, shape)
    _, features = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(shape)), variables)
    assert features.shape[1:3] == fmap


def test_init_reproducible_from_seed(digits):
    _, variables, _, init = digits
    chex.assert_trees_all_equal(variables, init(jax.random.key(0)))
    other = init(jax.random.key(1))
    assert not np.allclose(other["params"]["conv1_1"]["kernel"],
                           variables["params"]["conv1_1"]["kernel"])


def test_jit_does_not_retrace(digits):
    model, variables, x, _ = digits

    @jax.jit
    @chex.assert_max_traces(n=1)
    def loss(v, x):
        logits, _ = model.apply(v, x)
        return jnp.mean(logits ** 2)

    chex.clear_trace_counter()
    for step in range(3):
        loss(variables, x + step).block_until_ready()


# --- convolution ---------------------------------------------------------------------------

def _conv_numpy(x, kernel, stride, pad):
    """Direct NHWC cross-correlation with zero padding (what torch's conv2d computes)."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h = (xp.shape[1] - k) // stride + 1
    w = (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[-1]), np.float64)
    for i in range(k):
        for j in range(k):
            window = xp[:, i:i + stride * (h - 1) + 1:stride, j:j + stride * (w - 1) + 1:stride]
            out += window @ kernel[i, j]
    return out


@pytest.mark.parametrize("size,k,stride", [(9, 7, 2), (8, 3, 1), (8, 3, 2), (7, 1, 1), (8, 1, 2)])
def test_conv_forward_and_gradients(size, k, stride):
    rng = np.random.default_rng(k * 10 + stride)
    x = rng.standard_normal((2, size, size, 3)).astype(np.float32)
    kernel = rng.standard_normal((k, k, 3, 4)).astype(np.float32)
    out = layers.conv2d(jnp.asarray(x), jnp.asarray(kernel), stride, k // 2)
    np.testing.assert_allclose(out, _conv_numpy(x, kernel, stride, k // 2), rtol=1e-4, atol=1e-4)

    def grads(impl):
        loss = lambda x, w: jnp.sum(jnp.sin(layers.conv2d(x, w, stride, k // 2, impl)))
        return jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(kernel))

    # The explicit kernel gradient equals XLA's autodiff one.
    chex.assert_trees_all_close(grads("explicit"), grads("xla"), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="explicit"):
        layers.conv2d(jnp.asarray(x), jnp.asarray(kernel), stride, k // 2, "cudnn")


def _max_pool_numpy(x, window, stride, pad):
    """Direct torch-semantics max-pool (padding with -inf)."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    h = (xp.shape[1] - window) // stride + 1
    w = (xp.shape[2] - window) // stride + 1
    out = np.full((x.shape[0], h, w, x.shape[-1]), -np.inf, x.dtype)
    for i in range(window):
        for j in range(window):
            out = np.maximum(out, xp[:, i:i + stride * (h - 1) + 1:stride,
                                     j:j + stride * (w - 1) + 1:stride])
    return out


@pytest.mark.parametrize("size,window,stride,pad", [(8, 2, 2, 0), (7, 2, 2, 0), (9, 3, 2, 1),
                                                    (8, 3, 2, 1), (6, 3, 1, 1)])
def test_max_pool_matches_numpy_and_xla_gradients(size, window, stride, pad):
    x = np.random.default_rng(size + window).standard_normal((2, size, size + 1, 3))
    x = x.astype(np.float32)  # continuous values: no tied maxima
    out = layers.max_pool(jnp.asarray(x), window, stride, pad, impl="explicit")
    np.testing.assert_array_equal(out, _max_pool_numpy(x, window, stride, pad))

    def grad(impl):
        return jax.grad(lambda x: jnp.sum(jnp.sin(layers.max_pool(x, window, stride, pad,
                                                                     impl))))(jnp.asarray(x))

    np.testing.assert_allclose(grad("explicit"), grad("xla"), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="impl"):
        layers.max_pool(jnp.asarray(x), window, stride, pad, impl="cudnn")


def test_conv_impl_auto_resolves_by_backend(monkeypatch):
    assert layers.resolve_impl("xla") == "xla"
    assert layers.resolve_impl("explicit") == "explicit"
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert layers.resolve_impl("auto") == "explicit"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert layers.resolve_impl("auto") == "xla"
    assert models.create("resnet50", 3).conv_impl == "auto"


# --- ADL -----------------------------------------------------------------------------------

def _adl_numpy(x, drop, gamma):
    """The ADL formula in NumPy for one chosen branch."""
    attention = x.mean(axis=-1, keepdims=True)
    if drop:
        peak = attention.max(axis=(1, 2, 3), keepdims=True)
        return x * (attention < gamma * peak)
    return x * (1.0 / (1.0 + np.exp(-attention)))


@pytest.fixture(scope="module")
def adl_input():
    return np.asarray(jax.random.normal(jax.random.key(3), (2, 5, 6, 4)), np.float32)


@pytest.mark.parametrize("drop_rate,drop", [(1.0, True), (0.0, False)])
def test_adl_branches_match_numpy(adl_input, drop_rate, drop):
    layer = adl_lib.ADL(drop_rate=drop_rate, gamma=0.9)
    out = layer.apply({}, adl_input, train=True, rngs={"adl": jax.random.key(0)})
    np.testing.assert_allclose(out, _adl_numpy(adl_input, drop, 0.9), rtol=1e-6, atol=1e-7)


def test_adl_identity_at_eval(adl_input):
    out = adl_lib.ADL().apply({}, adl_input, train=False)
    np.testing.assert_array_equal(out, adl_input)


def test_adl_random_branch_both_reachable_and_deterministic(adl_input):
    layer = adl_lib.ADL(drop_rate=0.75, gamma=0.9)
    run = jax.jit(lambda key: layer.apply({}, adl_input, train=True, rngs={"adl": key}))
    drop = _adl_numpy(adl_input, True, 0.9)
    importance = _adl_numpy(adl_input, False, 0.9)
    branches = []
    for seed in range(40):
        out = np.asarray(run(jax.random.key(seed)))
        if np.allclose(out, drop, atol=1e-6):
            branches.append("drop")
        else:
            np.testing.assert_allclose(out, importance, rtol=1e-6, atol=1e-7)
            branches.append("importance")
        np.testing.assert_array_equal(out, run(jax.random.key(seed)))
    # One draw per forward pass, P(drop) = 0.75: 40 draws see both, mostly drops.
    assert 20 <= branches.count("drop") <= 38, branches


def test_adl_in_model_train_eval_and_maps(digits):
    _, base_variables, x, _ = digits
    model = models.create("digits_cnn", 10, adl_positions="1M 31", adl_drop_rate=1.0)
    variables = base_variables  # ADL has no parameters: same variables
    plain_logits, _ = models.create("digits_cnn", 10).apply(variables, x)
    eval_logits, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    np.testing.assert_allclose(eval_logits[0], plain_logits, rtol=1e-6)
    maps = models.adl_maps(state)
    assert set(maps) == {"1M", "31"}
    chex.assert_shape(maps["1M"], (3, 14, 28))
    chex.assert_shape(maps["31"], (3, 7, 14))
    (train_logits, features), state = model.apply(
        variables, x, train=True, rngs={"adl": jax.random.key(0)},
        mutable=["intermediates", "batch_stats"])
    maps = models.adl_maps(state)
    # drop_rate=1: the last ADL zeroes the most attended positions of the returned features.
    attention = np.asarray(maps["31"])
    dropped = attention >= 0.9 * attention.max(axis=(1, 2), keepdims=True)
    assert dropped.any()
    np.testing.assert_array_equal(np.asarray(features)[dropped], 0.0)
    np.testing.assert_array_equal(maps["31/selected"], (~dropped).astype(np.float32))
    assert not np.allclose(train_logits, plain_logits)


def test_adl_needs_rng_in_training(digits):
    _, variables, x, _ = digits
    model = models.create("digits_cnn", 10, adl_positions="31")
    with pytest.raises(Exception, match="adl"):
        model.apply(variables, x, train=True, mutable=["batch_stats"])


# --- BatchNorm -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet():
    model = models.create("resnet50", 5)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    abstract = _abstract_variables(model, x.shape)
    # Random values without compiling init (slow for ResNet50); running stats non-trivial.
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        name = path[-1].key
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return (rng.standard_normal(leaf.shape) * 0.05).astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(fill, abstract)
    return model, variables, x


def test_batchnorm_updates_stats_only_in_training(resnet):
    model, variables, x = resnet
    (logits, features), updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    chex.assert_shape(logits, (2, 5))
    chex.assert_shape(features, (2, 2, 2, 2048))
    old = variables["batch_stats"]["bn1"]
    new = updates["batch_stats"]["bn1"]
    assert not np.allclose(new["mean"], old["mean"])
    # Flax momentum 0.9 == torch momentum 0.1 on the mean of the stem's conv output.
    conv_out = jax.lax.conv_general_dilated(
        x, variables["params"]["conv1"]["kernel"], (2, 2), ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * conv_out.mean((0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    # Evaluation uses the running statistics and cannot change them.
    eval_out, state = model.apply(variables, x, train=False, mutable=["batch_stats"])
    chex.assert_trees_all_equal(state["batch_stats"], variables["batch_stats"])
    assert not np.allclose(eval_out[0], logits)


# --- API -----------------------------------------------------------------------------------

def test_create_errors():
    with pytest.raises(ValueError, match="vgg16_gap, resnet50, digits_cnn"):
        models.create("alexnet", 10)
    with pytest.raises(ValueError, match="valid options"):
        models.create("vgg16_gap", 10, adl_postions="3M")
    with pytest.raises(ValueError, match="valid codes"):
        models.create("vgg16_gap", 10, adl_positions="3M 5M")
    with pytest.raises(ValueError, match="valid codes"):
        models.create("resnet50", 10, adl_positions="30 43")
    with pytest.raises(ValueError, match="adl_drop_rate"):
        models.create("resnet50", 10, adl_drop_rate=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        models.create("digits_cnn", 0)
    with pytest.raises(ValueError, match="conv_impl"):
        models.create("resnet50", 3, conv_impl="winograd")
    with pytest.raises(ValueError, match="images"):
        models.create("digits_cnn", 10).init(jax.random.key(0), jnp.zeros((28, 56, 1)))


def test_authors_position_codes_accepted():
    assert models.create("vgg16_gap", 2, adl_positions="3M 4M 53").adl_positions == (
        "3M", "4M", "53")
    assert models.create("resnet50", 2, adl_positions="30 40 42").adl_positions == (
        "30", "40", "42")
    assert models.create("resnet50", 2, adl_positions="").adl_positions == ()


@pytest.mark.parametrize("name,new", [
    ("vgg16_gap", {"conv6", "head"}),
    ("resnet50", {"layer4_0", "layer4_1", "layer4_2", "head"}),
    ("digits_cnn", set()),
])
def test_new_layer_mask(name, new):
    params = _abstract_variables(models.create(name, 7), (1, 32, 32, 3))["params"]
    mask = models.new_layer_mask(name, params)
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
    for module, sub in mask.items():
        assert all(v == (module in new) for v in jax.tree_util.tree_leaves(sub)), module
    with pytest.raises(ValueError, match="params"):
        models.new_layer_mask(name, {"params": params})


# --- bfloat16 mixed precision ----------------------------------------------------------------

# Largest |difference| between float32 and bfloat16 min-max-normalised CAMs of the same
# variables (4 random 64x64 images, random initialisation, 4x4 maps), measured on XLA:CPU:
# vgg16_gap 0.006, resnet50 0.028. bfloat16 keeps 8 bits of mantissa (relative rounding
# 2^-8 = 0.004 per op); the bounds leave about 2x headroom over the measured values.
BF16_MAP_ATOL = {"vgg16_gap": 0.02, "resnet50": 0.06}


def _random_variables(model, shape, seed=0):
    """Variables of ``model`` filled with N(0, std) values (He-like scale) and BN statistics,
    without compiling ``init`` (slow for ResNet50)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("var", "scale"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name in ("mean", "bias"):
            return (rng.standard_normal(leaf.shape) * 0.05).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, _abstract_variables(model, shape))


def _normalised_cams(features, kernel, labels):
    from infocam_jax.maps import cams  # pylint: disable=import-outside-toplevel
    m = np.asarray(cams.cam(features, kernel, labels), np.float64)
    lo = m.min(axis=(1, 2), keepdims=True)
    hi = m.max(axis=(1, 2), keepdims=True)
    return (m - lo) / (hi - lo)


@pytest.mark.parametrize("name", ["vgg16_gap", "resnet50"])
def test_bf16_outputs_float32_and_maps_close_to_float32(name):
    shape = (4, 64, 64, 3)
    x = jax.random.normal(jax.random.key(0), shape)
    labels = jnp.arange(4) % 5
    variables = _random_variables(models.create(name, 5), shape)
    out = {}
    for dtype in models.DTYPES:
        model = models.create(name, 5, dtype=dtype)
        logits, features = jax.jit(lambda v, x, m=model: m.apply(v, x))(variables, x)
        assert logits.dtype == jnp.float32 and features.dtype == jnp.float32
        out[dtype] = (np.asarray(logits), features)
    kernel = models.classifier_kernel(variables)
    maps32 = _normalised_cams(out["float32"][1], kernel, labels)
    maps16 = _normalised_cams(out["bfloat16"][1], kernel, labels)
    np.testing.assert_allclose(maps16, maps32, atol=BF16_MAP_ATOL[name])
    # Not identical: the convolutions really ran in bfloat16.
    assert np.abs(maps16 - maps32).max() > 1e-5
    scale = np.abs(out["float32"][0]).max()
    np.testing.assert_allclose(out["bfloat16"][0], out["float32"][0], atol=0.02 * scale)


def test_bf16_train_step_updates_float32_params():
    """config.dtype="bfloat16" through trainer.create_model and the per-device train step:
    gradients, updated parameters and BatchNorm statistics are float32 and finite."""
    import ml_collections  # pylint: disable=import-outside-toplevel
    import optax  # pylint: disable=import-outside-toplevel

    from infocam_jax import devices  # pylint: disable=import-outside-toplevel
    from infocam_jax.train import trainer, state as ts  # pylint: disable=import-outside-toplevel
    config = ml_collections.ConfigDict(dict(
        model="resnet50", num_classes=5, dtype="bfloat16",
        model_options=dict(adl_positions="30", adl_drop_rate=0.75, adl_gamma=0.9)))
    model = trainer.create_model(config)
    assert model.dtype == jnp.bfloat16
    shape = (2, 32, 32, 3)
    variables = _random_variables(model, shape, seed=1)
    tx = optax.sgd(0.1, momentum=0.9)
    state = ts.create_train_state(variables, tx)
    batch = {"image": np.asarray(jax.random.normal(jax.random.key(2), shape)),
             "label": np.array([1, 3], np.int32)}

    def loss_fn(logits, batch):
        assert logits.dtype == jnp.float32
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    step = ts.parallelize(lambda s, b, k: ts.train_step(
        s, b, k, model=model, tx=tx, loss_fn=loss_fn, multi_label=False))
    new, metrics = step(devices.replicate(state), devices.shard(batch, 1),
                        devices.replicate(jax.random.key(0)))
    new = devices.unreplicate(new)
    assert np.isfinite(devices.unreplicate(metrics)["loss"])
    for tree in (new.params, new.batch_stats, new.opt_state):
        for leaf in jax.tree_util.tree_leaves(tree):
            assert leaf.dtype == np.float32 and np.isfinite(leaf).all()
    for module in ("conv1", "layer4_2", "head"):
        changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b),
                                         new.params[module], variables["params"][module])
        assert all(jax.tree_util.tree_leaves(changed)), module
    assert not np.allclose(new.batch_stats["bn1"]["mean"], variables["batch_stats"]["bn1"]["mean"])


@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (1, 1)])
def test_conv_explicit_gradients_in_bf16(k, stride):
    """The explicit kernel-gradient path accumulates in float32: with bfloat16 inputs its
    gradients equal float32 autodiff of the same bfloat16-rounded inputs to bfloat16 rounding."""
    rng = np.random.default_rng(k + stride)
    x = jnp.asarray(rng.standard_normal((4, 16, 16, 8)), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((k, k, 8, 16)) * 0.1, jnp.bfloat16)

    def grads(impl, dtype):
        loss = lambda x, w: jnp.sum(layers.conv2d(x, w, stride, k // 2, impl).astype(
            jnp.float32) ** 2)
        return jax.grad(loss, argnums=(0, 1))(x.astype(dtype), kernel.astype(dtype))

    dx, dw = grads("explicit", jnp.bfloat16)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    rx, rw = grads("xla", jnp.float32)
    for got, want in ((dx, rx), (dw, rw)):
        want = np.asarray(want)
        np.testing.assert_allclose(np.asarray(got, np.float32), want,
                                   atol=0.02 * np.abs(want).max())


@pytest.mark.parametrize("dtype", ["float16", "int8", "bf16"])
def test_create_rejects_other_dtypes(dtype):
    with pytest.raises(ValueError, match="dtype"):
        models.create("vgg16_gap", 3, dtype=dtype)


def test_train_create_model_dtype_conflict():
    import ml_collections  # pylint: disable=import-outside-toplevel

    from infocam_jax.train import trainer  # pylint: disable=import-outside-toplevel
    config = ml_collections.ConfigDict(dict(model="vgg16_gap", num_classes=3, dtype="float32",
                                            model_options=dict(dtype="bfloat16")))
    with pytest.raises(ValueError, match="config.dtype"):
        trainer.create_model(config)
    config.dtype = "bfloat16"
    assert trainer.create_model(config).dtype == jnp.bfloat16
