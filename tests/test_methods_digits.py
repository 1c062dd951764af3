"""The WSOL method zoo on the digits CNN: build / apply / parameter trees, and the ACoL / SPG
losses and readout against plain NumPy (and torch's bilinear upsampling, which the reference
WSOL evaluation's SPG uses) statements of the reference's definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import losses, methods, models
from infocam_jax.methods import acol, spg

IMAGES = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 1))
LABELS = jnp.array([1, 4, 7])


def _init(method, **options):
    model = methods.create_model("digits_cnn", 10, method=method, **options)
    return model, model.init({"params": jax.random.PRNGKey(1)}, IMAGES, train=False)


def _abstract_init(model):
    """Parameter shapes without computing anything (``jax.eval_shape``)."""
    return jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(1)}, IMAGES,
                                             train=False))


def _shapes(tree):
    return jax.tree_util.tree_map(jnp.shape, tree)


# ----------------------------------------------------------------------------- build / apply

@pytest.mark.parametrize("method", ["cam", "adl", "has", "cutmix"])
def test_cam_family_keeps_the_plain_network_and_tree(method):
    model = methods.create_model("digits_cnn", 10, method=method)
    legacy = models.create("digits_cnn", 10, layout=methods.get(method).layout)
    assert isinstance(model, models.Network) and model.method_head is None
    assert model == legacy
    assert _shapes(_abstract_init(model)) == _shapes(_abstract_init(legacy))
    assert model.adl_positions == (("2M", "31") if method == "adl" else ())


@pytest.mark.parametrize("method,width", [("acol", 16), ("spg", 16), ("acol", 8), ("spg", 8)])
def test_acol_spg_build_with_head_widths_4w(method, width):
    model = methods.create_model("digits_cnn", 10, method=method, width=width)
    variables = _abstract_init(model)
    assert isinstance(model, models.Network) and model.method_head.method == method
    params = variables["params"]
    # The trunk is the legacy digits trunk, name for name.
    legacy = _abstract_init(models.create("digits_cnn", 10, width=width))
    trunk = {k: v for k, v in params.items() if k != method}
    assert _shapes(trunk) == _shapes({k: v for k, v in legacy["params"].items()
                                      if k != "head"})
    head = params[method]
    w = 4 * width
    if method == "acol":
        assert head["a_conv1"]["kernel"].shape == (3, 3, 4 * width, w)
        assert head["b_conv2"]["kernel"].shape == (3, 3, w, w)
        assert head["a_head"]["kernel"].shape == (w, 10)
    else:
        assert head["b1a"]["kernel"].shape == (3, 3, 2 * width, w)   # tap b1 = pool2 output
        assert head["b2a"]["kernel"].shape == (3, 3, 4 * width, w)   # tap b2 = conv3_1 output
        assert head["c_conv"]["kernel"].shape == (3, 3, 4 * width, w)
        assert head["a4"]["kernel"].shape == (4 * width, 10)
    out = jax.eval_shape(lambda v: model.apply(v, IMAGES, train=False, labels=LABELS),
                         variables)
    assert out[0].shape == (3, 10)
    updated = jax.eval_shape(lambda v: model.apply(v, IMAGES, train=True, labels=LABELS,
                                                   mutable=["batch_stats"])[1], variables)
    assert set(updated) == {"batch_stats"}


@pytest.mark.parametrize("kwargs,field", [
    ({"method": "acol", "large_feature_map": True}, "large_feature_map"),
    ({"method": "spg", "width": 0}, "width"),
    ({"method": "acol", "adl_positions": "31"}, "adl_positions"),
    ({"method": "spg", "acol_drop_threshold": 1.5}, "acol_drop_threshold"),
])
def test_bad_digits_options_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        methods.create_model("digits_cnn", 10, **kwargs)


def test_acol_erases_the_given_class():
    """Branch A (the logits) ignores ``labels``; branch B reads features erased where branch
    A's min-max normalised map of that class is >= 0.7 (NumPy statement of the erasure)."""
    model, variables = _init("acol", width=4)
    legacy = models.create("digits_cnn", 10, width=4)
    lv = {"params": {k: v for k, v in variables["params"].items() if k != "acol"},
          "batch_stats": variables["batch_stats"]}
    lv["params"]["head"] = {"kernel": jnp.zeros((16, 10)), "bias": jnp.zeros(10)}

    @jax.jit
    def run(v, lv):
        a = model.apply(v, IMAGES, train=False, labels=LABELS)
        b = model.apply(v, IMAGES, train=False, labels=(LABELS + 1) % 10)
        top = model.apply(v, IMAGES, train=False)
        same = model.apply(v, IMAGES, train=False, labels=jnp.argmax(a.logits, -1))
        return a, b, top, same, legacy.apply(lv, IMAGES, train=False)[1]

    a, b, top, same, trunk = run(variables, lv)
    np.testing.assert_array_equal(np.asarray(a.logits), np.asarray(b.logits))
    assert not np.allclose(np.asarray(a.logits_b), np.asarray(b.logits_b))
    # labels=None reads the top-1 class of branch A.
    np.testing.assert_allclose(np.asarray(top.logits_b), np.asarray(same.logits_b), rtol=1e-6)
    # The erasure in NumPy, then branch B's two convolutions and head by lax / NumPy.
    p = variables["params"]["acol"]
    fa = np.asarray(a.features_a, np.float64)
    s = np.einsum("bhwk,kb->bhw", fa, np.asarray(p["a_head"]["kernel"])[:, np.asarray(LABELS)])
    lo, hi = s.min((1, 2), keepdims=True), s.max((1, 2), keepdims=True)
    keep = ((s - lo) / (hi - lo) < 0.7)[..., None]
    assert 0 < keep.sum() < keep.size
    x = jnp.asarray(np.asarray(trunk) * keep, jnp.float32)
    for name in ("b_conv1", "b_conv2"):
        x = jax.nn.relu(jax.lax.conv_general_dilated(
            x, p[name]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST) + p[name]["bias"])
    np.testing.assert_allclose(np.asarray(a.features_b), np.asarray(x), rtol=1e-4, atol=1e-5)
    want_logits = np.asarray(x).mean((1, 2)) @ np.asarray(p["b_head"]["kernel"]) \
        + np.asarray(p["b_head"]["bias"])
    np.testing.assert_allclose(np.asarray(a.logits_b), want_logits, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- losses vs NumPy

def _ce(logits, labels, weights=None):
    z = np.asarray(logits, np.float64)
    ce = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(len(z)),
                                                                          labels]
    w = np.ones(len(z)) if weights is None else np.asarray(weights, np.float64)
    return float((ce * w).sum() / w.sum())


def test_acol_loss_is_the_sum_of_two_cross_entropies():
    rng = np.random.default_rng(0)
    la, lb = rng.normal(size=(2, 5, 6)).astype(np.float32)
    y = np.array([0, 5, 2, 2, 3])
    w = np.array([1, 1, 0, 1, 1], np.float32)
    out = acol.AcolOutput(jnp.asarray(la), jnp.asarray(lb), None, None)
    np.testing.assert_allclose(float(acol.acol_loss(out, y)),
                               _ce(la, y) + _ce(lb, y), rtol=1e-5)
    np.testing.assert_allclose(float(acol.acol_loss(out, y, weights=w)),
                               _ce(la, y, w) + _ce(lb, y, w), rtol=1e-5)


def _up(maps, size):
    """The reference's nn.Upsample(size, mode='bilinear') (align_corners=False); the tests that
    call it skip, with this reason, where PyTorch is not installed (the README's `.[test]`)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference of SPG's resize")
    t = torch.from_numpy(np.asarray(maps, np.float64))[:, None]
    return torch.nn.functional.interpolate(t, size=size, mode="bilinear",
                                           align_corners=False)[:, 0].numpy()


def _mask(attention, high, low):
    """The reference's get_mask: 255 (ignored), 1 where > high (per image: fewer than 30 such
    pixels -> > 0.7 max instead), then 0 where < low."""
    mask = np.full(attention.shape, 255.0)
    for b in range(attention.shape[0]):
        fg = attention[b] > high
        if fg.sum() < 30:
            fg = attention[b] > attention[b].max() * 0.7
        mask[b][fg] = 1.0
    mask[attention < low] = 0.0
    return mask


def _bce(logits, mask, keep):
    pos = (mask < 255) & keep[:, None, None]
    x, t = logits[pos], mask[pos]
    return float(np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))))


def _spg_reference(out, y, thresholds, weights=None):
    (h1, l1), (h2, l2), (h3, l3) = thresholds
    size = out.attention.shape[1:]
    keep = np.ones(len(y), bool) if weights is None else np.asarray(weights) > 0
    up_b1, up_b2 = _up(out.logits_b1, size), _up(out.logits_b2, size)
    up_c = _up(out.logits_c, size)
    b2i = 1 / (1 + np.exp(-up_b2))
    return (_ce(out.logits, y, weights)
            + _bce(up_b2, _mask(np.asarray(out.attention, np.float64), h1, l1), keep)
            + _bce(up_b1, _mask(b2i, h2, l2), keep)
            + _bce(up_c, _mask(np.asarray(out.fused_attention, np.float64), h3, l3), keep))


def _spg_output(seed):
    """Random SPG outputs on a 16x16 input: image 0 has many pixels above 0.7, image 1 fewer
    than 30 (the 0.7 max fallback), image 2 peaks below every high threshold."""
    rng = np.random.default_rng(seed)
    att = rng.uniform(0, 1, size=(3, 16, 16))
    att[1] = rng.uniform(0, 0.6, size=(16, 16))
    att[1, :4, :5] = rng.uniform(0.75, 1.0, size=(4, 5))                # 20 pixels > 0.7
    att[2] = rng.uniform(0, 0.4, size=(16, 16))
    fused = rng.uniform(0, 1, size=(3, 16, 16))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return spg.SpgOutput(f32(rng.normal(size=(3, 10))), None,
                         f32(3 * rng.normal(size=(3, 4, 4))), f32(3 * rng.normal(size=(3, 8, 8))),
                         f32(3 * rng.normal(size=(3, 8, 8))), f32(att), f32(fused))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("thresholds", [spg.DEFAULT_THRESHOLDS,
                                        ((0.5, 0.2), (0.3, 0.1), (0.9, 0.3))])
def test_spg_loss_equals_the_reference_statement(seed, thresholds):
    out = _spg_output(seed)
    y = np.array([3, 0, 9])
    got = spg.spg_loss(out, y, thresholds=thresholds)
    ref = _spg_reference(out, y, thresholds)
    np.testing.assert_allclose(float(got), ref, rtol=2e-5)
    w = np.array([1.0, 0.0, 1.0], np.float32)
    got_w = spg.spg_loss(out, y, weights=w, thresholds=thresholds)
    np.testing.assert_allclose(float(got_w), _spg_reference(out, y, thresholds, w), rtol=2e-5)


def test_spg_targets_fallback_and_ignore():
    out = _spg_output(0)
    att = np.asarray(out.attention, np.float64)
    target, valid = spg.spg_targets(out.attention, 0.7, 0.01)
    mask = _mask(att, 0.7, 0.01)
    np.testing.assert_array_equal(np.asarray(valid), mask < 255)
    np.testing.assert_array_equal(np.asarray(target)[mask < 255], mask[mask < 255])
    assert (mask[1] == 1).sum() == 20          # fallback: the 20 pixels > 0.7 max
    assert (mask[2] == 1).sum() > 0            # fallback below the high threshold


def test_spg_resize_equals_torch_bilinear():
    maps = np.random.default_rng(3).normal(size=(2, 5, 7)).astype(np.float32)
    got = spg.resize_bilinear(jnp.asarray(maps), (16, 12))
    np.testing.assert_allclose(np.asarray(got), _up(maps, (16, 12)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["acol", "spg"])
def test_model_loss_and_readout_run(method):
    """The loss and readout on real model outputs (the train step's gradients are
    tests/test_train_methods.py's): a finite loss, and the readout's branches reproduce the
    logits (``logits = mean(features) @ kernel + bias``)."""
    model, variables = _init(method, width=4)

    @jax.jit
    def run(v):
        out = model.apply(v, IMAGES, train=False, labels=LABELS)
        wsol = methods.get(method)
        return out, wsol.loss(wsol.options(), out, {"label": LABELS}, None, None,
                              losses.softmax_cross_entropy)

    out, value = run(variables)
    assert np.isfinite(float(value))
    ro = methods.get(method).readout(variables, out)
    assert ro.fusion == ("max_minmax" if method == "acol" else "single")
    assert len(ro.branches) == (2 if method == "acol" else 1)
    for br in ro.branches:
        want = np.asarray(br.features).mean((1, 2)) @ np.asarray(br.kernel) + np.asarray(br.bias)
        np.testing.assert_allclose(np.asarray(br.logits), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ro.branches[0].logits), np.asarray(out[0]))
