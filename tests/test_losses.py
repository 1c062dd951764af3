"""losses.py against direct NumPy formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from infocam_jax import losses

B, M = 6, 5
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(B, M)).astype(np.float32)
    labels = rng.integers(0, M, size=B).astype(np.int32)
    targets = (rng.random((B, M)) < 0.4).astype(np.float32)
    priors = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    label_priors = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    weights = np.array([1, 0, 1, 1, 0, 1], np.float32)
    return logits, labels, targets, priors, label_priors, weights


# Direct (naive) statements of the formulas, in float64.
def np_softmax_ce(n, y):
    n = n.astype(np.float64)
    p = np.exp(n) / np.exp(n).sum(1, keepdims=True)
    return -np.log(p[np.arange(len(y)), y])


def np_pc_softmax_ce(n, y, prior):
    n = n.astype(np.float64)
    q = np.exp(n) / (prior * np.exp(n)).sum(1, keepdims=True)
    return -np.log(q[np.arange(len(y)), y])


def np_bce(n, t):
    s = 1 / (1 + np.exp(-n.astype(np.float64)))
    return -(t * np.log(s) + (1 - t) * np.log(1 - s))


def np_pc_sigmoid(n, t, pi):
    e = np.exp(n.astype(np.float64))
    z = pi * e + (1 - pi) * 1.0
    return -(t * np.log(e / z) + (1 - t) * np.log(1.0 / z))


def np_weighted_mean(x, w):
    return np.sum(w * x) / np.sum(w)


def test_softmax_ce(data):
    logits, labels, _, _, _, weights = data
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels),
                               np_softmax_ce(logits, labels).mean(), **TOL)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, weights),
                               np_weighted_mean(np_softmax_ce(logits, labels), weights), **TOL)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, weights > 0),
                               np_weighted_mean(np_softmax_ce(logits, labels), weights), **TOL)


def test_pc_softmax_ce(data):
    logits, labels, _, priors, _, weights = data
    np.testing.assert_allclose(losses.pc_softmax_cross_entropy(logits, labels, priors, weights),
                               np_weighted_mean(np_pc_softmax_ce(logits, labels, priors),
                                                weights), **TOL)
    # Uniform priors: softmax CE - log M.
    np.testing.assert_allclose(
        losses.pc_softmax_cross_entropy(logits, labels, np.full(M, 1 / M)),
        np_softmax_ce(logits, labels).mean() - np.log(M), **TOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sigmoid_bce(data, reduction):
    logits, _, targets, _, _, weights = data
    per = np_bce(logits, targets)
    per = per.mean(1) if reduction == "mean" else per.sum(1)
    np.testing.assert_allclose(
        losses.sigmoid_binary_cross_entropy(logits, targets, weights, reduction),
        np_weighted_mean(per, weights), **TOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_pc_sigmoid(data, reduction):
    logits, _, targets, _, pi, weights = data
    per = np_pc_sigmoid(logits, targets, pi)
    per = per.mean(1) if reduction == "mean" else per.sum(1)
    np.testing.assert_allclose(
        losses.pc_sigmoid_binary_cross_entropy(logits, targets, pi, weights, reduction),
        np_weighted_mean(per, weights), **TOL)


def test_pc_sigmoid_is_binary_pc_softmax(data):
    """Per label: PC-softmax over {present: (n, π), absent: (0, 1-π)}; π = 1/2 gives BCE - log 2."""
    logits, _, targets, _, pi, _ = data
    pairs = np.stack([logits, np.zeros_like(logits)], axis=-1).reshape(-1, 2)
    outcome = np.where(targets.reshape(-1) > 0.5, 0, 1)
    prior_pairs = np.stack([np.broadcast_to(pi, logits.shape),
                            1 - np.broadcast_to(pi, logits.shape)], -1).reshape(-1, 2)
    n = pairs.astype(np.float64)
    q = np.exp(n) / (prior_pairs * np.exp(n)).sum(1, keepdims=True)
    ref = -np.log(q[np.arange(len(outcome)), outcome]).reshape(B, M)
    np.testing.assert_allclose(
        losses.pc_sigmoid_binary_cross_entropy(logits, targets, pi, label_reduction="sum"),
        ref.sum(1).mean(), **TOL)
    np.testing.assert_allclose(
        losses.pc_sigmoid_binary_cross_entropy(logits, targets, np.full(M, 0.5)),
        losses.sigmoid_binary_cross_entropy(logits, targets) - np.log(2), **TOL)


def test_by_name_matches_functions(data):
    logits, labels, targets, priors, pi, weights = data
    pairs = {
        "softmax": (labels, None, losses.softmax_cross_entropy(logits, labels, weights)),
        "pc_softmax": (labels, priors,
                       losses.pc_softmax_cross_entropy(logits, labels, priors, weights)),
        "sigmoid": (targets, None, losses.sigmoid_binary_cross_entropy(logits, targets, weights)),
        "pc_sigmoid": (targets, pi,
                       losses.pc_sigmoid_binary_cross_entropy(logits, targets, pi, weights)),
    }
    for name, (tgt, prior, expected) in pairs.items():
        np.testing.assert_allclose(losses.loss(name, logits, tgt, prior, weights), expected,
                                   **TOL)
        assert losses.per_example_loss(name, logits, tgt, prior).shape == (B,)


def test_all_weights_zero_gives_zero(data):
    logits, labels, *_ = data
    assert float(losses.softmax_cross_entropy(logits, labels, np.zeros(B))) == 0.0


@pytest.mark.parametrize("name", losses.LOSSES)
def test_large_logits_finite_value_and_gradient(data, name):
    _, labels, targets, priors, pi, weights = data
    rng = np.random.default_rng(1)
    big = (rng.choice([-1.0, 1.0], size=(B, M)) * 1e4).astype(np.float32)
    tgt = labels if name in ("softmax", "pc_softmax") else targets
    prior = {"pc_softmax": priors, "pc_sigmoid": pi}.get(name)

    def f(n):
        return losses.loss(name, n, tgt, prior, weights)

    value, grad = jax.jit(jax.value_and_grad(f))(jnp.asarray(big))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # Analytic gradients: softmax-type (q - onehot), sigmoid-type (σ(n + log π/(1-π)) - t) / M.
    n = big.astype(np.float64)
    scale = (weights / weights.sum())[:, None]
    if name in ("softmax", "pc_softmax"):
        shifted = n + (np.log(prior) if prior is not None else 0.0)
        q = np.exp(shifted - shifted.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        expected = (q - np.eye(M)[labels]) * scale
    else:
        shift = np.log(prior / (1 - prior)) if prior is not None else 0.0
        expected = (special.expit(n + shift) - targets) / M * scale
    np.testing.assert_allclose(grad, expected, atol=1e-4)  # float32: 1e4 + log p rounds


def test_out_of_range_label_under_jit_is_nan(data):
    logits, labels, *_ = data
    bad = labels.copy()
    bad[0] = M
    assert np.isnan(jax.jit(losses.softmax_cross_entropy)(logits, bad))


def test_estimate_priors():
    np.testing.assert_allclose(losses.estimate_priors(np.array([0, 0, 1, 2]), 3),
                               [0.5, 0.25, 0.25])
    multi = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(losses.estimate_priors(multi), [0.75, 0.25, 0.5])
    with pytest.raises(ValueError, match=r"classes \[3\] never occur"):
        losses.estimate_priors(np.array([0, 1, 2]), 4)
    np.testing.assert_allclose(losses.estimate_priors(np.array([0, 1, 2]), 4, floor=0.01),
                               [1 / 3, 1 / 3, 1 / 3, 0.01])
    always = np.array([[1, 0], [1, 1]])
    with pytest.raises(ValueError, match="never or always present"):
        losses.estimate_priors(always)
    np.testing.assert_allclose(losses.estimate_priors(always, floor=0.1), [0.9, 0.5])


@pytest.mark.parametrize("call,match", [
    (lambda n, y, t: losses.softmax_cross_entropy(n[0], y), "logits"),
    (lambda n, y, t: losses.softmax_cross_entropy(n, y[:-1]), "labels"),
    (lambda n, y, t: losses.softmax_cross_entropy(n, y.astype(float)), "labels"),
    (lambda n, y, t: losses.softmax_cross_entropy(n, np.full(B, M)), r"labels must lie in"),
    (lambda n, y, t: losses.softmax_cross_entropy(n, y, np.ones(B + 1)), "weights"),
    (lambda n, y, t: losses.softmax_cross_entropy(n, y, -np.ones(B)), "weights"),
    (lambda n, y, t: losses.pc_softmax_cross_entropy(n, y, np.zeros(M)), "priors"),
    (lambda n, y, t: losses.pc_softmax_cross_entropy(n, y, np.ones(M + 1)), "priors"),
    (lambda n, y, t: losses.sigmoid_binary_cross_entropy(n, t[:, :-1]), "targets"),
    (lambda n, y, t: losses.sigmoid_binary_cross_entropy(n, t * 2), "targets"),
    (lambda n, y, t: losses.sigmoid_binary_cross_entropy(n, t, label_reduction="max"),
     "label_reduction"),
    (lambda n, y, t: losses.pc_sigmoid_binary_cross_entropy(n, t, np.ones(M)), "priors"),
    (lambda n, y, t: losses.loss("focal", n, y), "name"),
    (lambda n, y, t: losses.loss("pc_softmax", n, y), "priors"),
    (lambda n, y, t: losses.estimate_priors(np.zeros((2, 2, 2), int)), "labels"),
    (lambda n, y, t: losses.estimate_priors(np.array([0, 5]), 3), "labels"),
    (lambda n, y, t: losses.estimate_priors(np.array([0, 1]), floor=0.7), "floor"),
])
def test_bad_input_raises(data, call, match):
    logits, labels, targets, *_ = data
    with pytest.raises(ValueError, match=match):
        call(logits, labels, targets)
