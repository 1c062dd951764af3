"""Tests of infocam_jax/methods/has.py and cutmix.py: HaS and CutMix against the reference's own transforms.

tests/fixtures/augment_reference.npz holds the reference's outputs (clovaai/wsolevaluation
``wsol/method/{has,cutmix}.py``, run by tools/augment_reference_fixtures.py with its random
sources replaced by stored draws): our ``*_apply`` given the same draws must reproduce them.
Beside that, each transform is checked against a plain NumPy statement of its docstring, on
shapes the fixtures do not cover, and the draws are checked for range and determinism.
"""
import pathlib

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import parity  # tests/parity.py (tests/ is on sys.path under pytest): provenance_line

from infocam_jax.methods import cutmix, has
from infocam_jax.train import trainer

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "augment_reference.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def _cases(ref, method):
    return sorted({k.split("/")[1] for k in ref if k.startswith(method + "/")})


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


# ----------------------------------------------------------------------------- NumPy statements

def np_has(images, hide, g):
    """Our HaS: cell (i, j) = rows [i g, (i+1) g) x cols [j g, (j+1) g), clipped by the border."""
    out = images.copy()
    b, h, w, _ = images.shape
    for n in range(b):
        for i in range(hide.shape[1]):
            for j in range(hide.shape[2]):
                if hide[n, i, j]:
                    out[n, i * g:min((i + 1) * g, h), j * g:min((j + 1) * g, w)] = 0.0
    return out


def np_has_reference_quirk(images, hide_ref, g):
    """The reference's loops as its docstring reads them: row offsets over range(0, W, g),
    column offsets over range(0, H, g), both ends clipped at H (then by the array)."""
    out = images.copy()
    b, h, w, _ = images.shape
    for n in range(b):
        for i, x in enumerate(range(0, w, g)):
            for j, y in enumerate(range(0, h, g)):
                if hide_ref[n, i, j]:
                    out[n, x:min(h, x + g), y:min(h, y + g)] = 0.0
    return out


def np_cutmix(images, lam0, perm, r, c):
    b, h, w, _ = images.shape
    cut_r, cut_c = int(h * np.sqrt(1.0 - lam0)), int(w * np.sqrt(1.0 - lam0))
    r1, r2 = np.clip(r - cut_r // 2, 0, h), np.clip(r + cut_r // 2, 0, h)
    c1, c2 = np.clip(c - cut_c // 2, 0, w), np.clip(c + cut_c // 2, 0, w)
    out = images.copy()
    out[:, r1:r2, c1:c2] = images[perm][:, r1:r2, c1:c2]
    return out, 1.0 - (r2 - r1) * (c2 - c1) / (h * w)


def _draw(lam0, perm, r, c, apply=True):
    return cutmix.CutMixDraw(apply=jnp.asarray(apply), lam0=jnp.float32(lam0),
                              perm=jnp.asarray(perm, jnp.int32), row=jnp.int32(r),
                              col=jnp.int32(c))


# ----------------------------------------------------------------------------- HaS

def test_fixture_covers_square_and_non_square_cases(ref):
    assert {"square_g4", "square_g5", "nonsquare_wide", "nonsquare_tall"} <= set(
        _cases(ref, "has"))
    assert len(_cases(ref, "cutmix")) >= 8


@pytest.mark.parametrize("case", ["square_g4", "square_g5"])
def test_has_equals_the_reference_on_square_inputs(ref, case):
    p = f"has/{case}/"
    g, rate = int(ref[p + "params"][0]), float(ref[p + "params"][1])
    hide = ref[p + "u"] <= rate
    assert np.any(ref[p + "u"] == rate), "the fixture holds exact ties (u == drop_rate)"
    got = jax.jit(has.has_apply, static_argnums=2)(_nhwc(ref[p + "images"]), hide, g)
    np.testing.assert_array_equal(np.asarray(got), _nhwc(ref[p + "out"]),
                                  err_msg=parity.provenance_line(ref))
    assert 0 < np.mean(np.asarray(got) == 0) < 1


@pytest.mark.parametrize("case", ["nonsquare_wide", "nonsquare_tall"])
def test_has_on_non_square_inputs_documents_the_reference_quirk(ref, case):
    p = f"has/{case}/"
    g, rate = int(ref[p + "params"][0]), float(ref[p + "params"][1])
    images, ref_out = _nhwc(ref[p + "images"]), _nhwc(ref[p + "out"])
    h, w = images.shape[1:3]
    # The reference's transform is exactly the quirk our docstring states ...
    np.testing.assert_array_equal(ref_out, np_has_reference_quirk(images, ref[p + "u"] <= rate, g),
                                  err_msg=parity.provenance_line(ref))
    rows = min(h, -(-w // g) * g)
    untouched = np.ones((h, w), bool)
    untouched[:rows, :min(h, w)] = False
    np.testing.assert_array_equal(ref_out[:, untouched], images[:, untouched])
    # ... while ours hides cells over the whole image.
    hide = np.ones((images.shape[0], *has.has_grid_shape(h, w, g)), bool)
    got = np.asarray(has.has_apply(images, hide, g))
    assert np.all(got == 0)


@pytest.mark.parametrize("shape, g", [((2, 12, 12, 3), 4), ((3, 10, 7, 1), 3),
                                      ((2, 5, 9, 2), 4), ((1, 6, 6, 1), 8), ((2, 8, 8, 1), 1)])
def test_has_apply_equals_numpy_statement(shape, g):
    rng = np.random.default_rng(sum(shape) + g)
    images = rng.normal(size=shape).astype(np.float32)
    hide = rng.random((shape[0], *has.has_grid_shape(shape[1], shape[2], g))) < 0.5
    got = jax.jit(has.has_apply, static_argnums=2)(images, hide, g)
    np.testing.assert_array_equal(np.asarray(got), np_has(images, hide, g))


def test_has_draw_uses_u_le_drop_rate_and_is_device_split_invariant():
    key = jax.random.PRNGKey(3)
    whole = has.has_draw(key, 8, 12, 10, 4, 0.5)
    chex.assert_shape(whole, (8, 3, 3))
    halves = [has.has_draw(key, 4, 12, 10, 4, 0.5, offset=o) for o in (0, 4)]
    np.testing.assert_array_equal(np.concatenate(halves), whole)
    np.testing.assert_array_equal(has.has_draw(key, 8, 12, 10, 4, 0.5), whole)
    assert not np.array_equal(has.has_draw(jax.random.PRNGKey(4), 8, 12, 10, 4, 0.5), whole)
    assert not np.any(has.has_draw(key, 8, 12, 10, 4, 0.0))
    assert np.all(has.has_draw(key, 8, 12, 10, 4, 1.0))
    many = has.has_draw(key, 400, 16, 16, 4, 0.3)
    assert abs(float(np.mean(many)) - 0.3) < 0.02  # 6400 cells: 5 standard deviations


def test_hide_and_seek_grid_zero_is_the_identity():
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    out = has.hide_and_seek(jax.random.PRNGKey(0), images, grid_size=0, drop_rate=0.5)
    np.testing.assert_array_equal(np.asarray(out), images)
    out = jax.jit(lambda k, x: has.hide_and_seek(k, x, 4, 0.5))(jax.random.PRNGKey(0), images)
    hidden = np.asarray(out) == 0
    # Whole 4x4 cells (all channels) are hidden or kept.
    cells = hidden.reshape(2, 2, 4, 2, 4, 3)
    assert np.all(cells.all(axis=(2, 4, 5)) == cells.any(axis=(2, 4, 5)))


# ----------------------------------------------------------------------------- CutMix

def _cutmix_case(ref, case):
    p = f"cutmix/{case}/"
    lam0, cx, cy = ref[p + "draw"]
    return p, float(lam0), int(cx), int(cy)


@pytest.mark.parametrize("case", ["mid", "lam0_zero", "lam0_one", "corner_low", "corner_high",
                                  "odd_cut", "nonsquare", "nonsquare_t"])
def test_cutmix_equals_the_reference(ref, case):
    p, lam0, cx, cy = _cutmix_case(ref, case)
    images = _nhwc(ref[p + "images"])
    draw = _draw(lam0, ref[p + "perm"], cx, cy)
    mixed, lam = jax.jit(cutmix.cutmix_apply)(images, draw)
    source = parity.provenance_line(ref)
    np.testing.assert_array_equal(np.asarray(mixed), _nhwc(ref[p + "out"]), err_msg=source)
    np.testing.assert_allclose(float(lam), float(ref[p + "lam"]), rtol=1e-6, err_msg=source)
    # Targets (y_a, y_b) and the label-mixed softmax loss of the reference's main.py.
    batch = {"label": jnp.asarray(ref[p + "labels"], jnp.int32), "image": mixed}
    permuted = cutmix.permute_targets(batch, draw.perm)
    np.testing.assert_array_equal(np.asarray(permuted["label"]), ref[p + "targets"][1],
                                  err_msg=source)
    np.testing.assert_array_equal(np.asarray(batch["label"]), ref[p + "targets"][0],
                                  err_msg=source)
    config = ml_collections.ConfigDict(dict(loss="softmax", multi_label=False))
    loss = cutmix.cutmix_loss(trainer.make_loss_fn(config, None), jnp.asarray(ref[p + "logits"]),
                               batch, draw.perm, lam)
    np.testing.assert_allclose(float(loss), float(ref[p + "loss"]), rtol=1e-5, err_msg=source)


def test_cutmix_fixture_exercises_the_clip():
    """The edge cases reach every clip: a box cut by each border, a full and an empty box."""
    np.testing.assert_allclose(np_cutmix(np.zeros((1, 12, 12, 1)), 0.0, [0], 6, 6)[1], 0.0)
    np.testing.assert_allclose(np_cutmix(np.zeros((1, 12, 12, 1)), 1.0, [0], 3, 3)[1], 1.0)


@pytest.mark.parametrize("shape", [(4, 9, 9, 2), (3, 6, 13, 1), (5, 16, 7, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_apply_equals_numpy_statement(shape, seed):
    rng = np.random.default_rng(seed * 100 + shape[1])
    images = rng.normal(size=shape).astype(np.float32)
    lam0 = float(rng.beta(1.0, 1.0))
    perm = rng.permutation(shape[0])
    r, c = int(rng.integers(shape[1])), int(rng.integers(shape[2]))
    mixed, lam = cutmix.cutmix_apply(images, _draw(lam0, perm, r, c))
    want, want_lam = np_cutmix(images, np.float32(lam0), perm, r, c)
    np.testing.assert_array_equal(np.asarray(mixed), want)
    np.testing.assert_allclose(float(lam), want_lam, rtol=1e-6)


def test_cutmix_not_applied_is_the_identity_with_lambda_one():
    images = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    mixed, lam = cutmix.cutmix_apply(images, _draw(0.3, [3, 2, 1, 0], 4, 4, apply=False))
    np.testing.assert_array_equal(np.asarray(mixed), images)
    assert float(lam) == 1.0


@jax.jit
def _cutmix_draws(keys):
    """Every draw the test below reads, as one jitted program: eagerly, each of the five calls
    compiled the Beta draw's rejection loop again (~5 CPU-s each). Only the ``apply`` flags of
    the prob 0 / 1 draws are returned (their other draws are dead code to XLA)."""
    def draws(prob, **kw):
        return jax.vmap(lambda k: cutmix.cutmix_draw(k, 6, 10, 14, 1.0, prob, **kw))

    return (draws(0.3)(keys), draws(0.0)(keys[:200]).apply, draws(1.0)(keys[:200]).apply,
            cutmix.cutmix_draw(keys[0], 6, 10, 14),
            cutmix.cutmix_draw(keys[0], 6, 10, 14, perm_key=keys[1]))


def test_cutmix_draw_ranges_and_probability():
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    draws, apply0, apply1, a, b = _cutmix_draws(keys)
    assert np.all((draws.row >= 0) & (draws.row < 10)) and np.all((draws.col >= 0) & (draws.col < 14))
    assert set(np.asarray(draws.row).tolist()) == set(range(10))
    assert set(np.asarray(draws.col).tolist()) == set(range(14))
    assert np.all(np.sort(np.asarray(draws.perm), axis=1) == np.arange(6))
    assert abs(float(np.mean(draws.apply)) - 0.3) < 0.05
    assert abs(float(np.mean(draws.lam0)) - 0.5) < 0.03  # Beta(1, 1) = U(0, 1)
    assert not np.any(apply0) and np.all(apply1)  # prob 0: never, prob 1: always
    # A separate permutation key changes only the permutation.
    assert (a.lam0, a.row, a.col) == (b.lam0, b.row, b.col)


def test_cutmix_loss_mixes_the_two_targets():
    config = ml_collections.ConfigDict(dict(loss="softmax", multi_label=False))
    loss_fn = trainer.make_loss_fn(config, None)
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    batch = {"label": jnp.asarray([0, 1, 2, 0])}
    perm = jnp.asarray([1, 0, 3, 2])
    la, lb = loss_fn(logits, batch), loss_fn(logits, {"label": batch["label"][perm]})
    for lam in (0.0, 0.25, 1.0):
        np.testing.assert_allclose(cutmix.cutmix_loss(loss_fn, logits, batch, perm, lam),
                                   lam * la + (1 - lam) * lb, rtol=1e-6)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("fn, args, field", [
    (has.check_has_options, (-1, 0.5), "has_grid_size"),
    (has.check_has_options, (2.5, 0.5), "has_grid_size"),
    (has.check_has_options, (4, 1.5), "has_drop_rate"),
    (cutmix.check_cutmix_options, (0.0, 1.0), "cutmix_beta"),
    (cutmix.check_cutmix_options, (1.0, -0.1), "cutmix_prob"),
])
def test_bad_options_name_the_field(fn, args, field):
    with pytest.raises(ValueError, match=field):
        fn(*args)


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="images must be"):
        has.has_apply(np.zeros((8, 8, 1)), np.zeros((1, 2, 2), bool), 4)
    with pytest.raises(ValueError, match="hide must have shape"):
        has.has_apply(np.zeros((1, 8, 8, 1)), np.zeros((1, 3, 2), bool), 4)
