"""Tests of infocam_jax.metrics.faithfulness against plain NumPy / SciPy statements of each definition.

The ROAD imputation is checked against a SciPy sparse solve of the system written pixel by
pixel; the confidence and ROAD counters against NumPy loops over images with a linear model;
streaming against one-shot (split batches, padding); pytorch-grad-cam when it is importable.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from infocam_jax.metrics import faithfulness as F

NUM_CLASSES = 4


def imputation_statement(img, removed):
    """Float64 solution of ROAD's system: each removed pixel = weighted mean (1/6 edge, 1/12
    diagonal, normalised over in-image neighbours) of its 8 neighbours; ``img [H,W,C]``."""
    h, w, c = img.shape
    pixels = np.argwhere(removed)
    index = -np.ones((h, w), int)
    index[removed] = np.arange(len(pixels))
    a = sp.lil_matrix((len(pixels), len(pixels)))
    b = np.zeros((len(pixels), c))
    for n, (y, x) in enumerate(pixels):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if (dy, dx) == (0, 0) or not (0 <= yy < h and 0 <= xx < w):
                    continue
                weight = 1 / 12 if dy and dx else 1 / 6
                a[n, n] += weight
                if removed[yy, xx]:
                    a[n, index[yy, xx]] -= weight
                else:
                    b[n] += weight * img[yy, xx]
    out = img.astype(np.float64).copy()
    if len(pixels):
        out[removed] = spl.spsolve(a.tocsc(), b).reshape(len(pixels), c)
    return out


def blob_maps(rng, n, h, w):
    yy, xx = np.mgrid[:h, :w]
    return np.stack([np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2)
                            / (0.1 * h * w)) for _ in range(n)]).astype(np.float32)


def linear_model(seed=0, shape=(8, 8, 2)):
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(int(np.prod(shape)), NUM_CLASSES)).astype(np.float32) * 0.3

    def apply_np(x):
        return x.reshape(len(x), -1).astype(np.float64) @ kernel

    def apply_fn(x):
        return jnp.dot(x.reshape(x.shape[0], -1), kernel, precision="highest")

    return apply_np, apply_fn


def softmax_np(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Removal masks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", F.ROAD_ORDERS)
@pytest.mark.parametrize("percentile", [10, 20, 55.5, 80, 90])
def test_keep_mask_matches_numpy_percentile(order, percentile):
    maps = np.random.default_rng(1).uniform(size=(3, 9, 7)).astype(np.float32)
    got = np.asarray(F.road_keep_mask(maps, percentile, order))
    for m, g in zip(maps, got):
        rel = m if order == "morf" else np.float32(1) - m
        np.testing.assert_array_equal(g, rel < np.percentile(rel, percentile))
    # about (100 - p) % removed
    assert abs((~got).mean() - (100 - percentile) / 100) < 0.05


def test_morf_removes_most_relevant_and_lerf_least():
    maps = np.arange(100, dtype=np.float32).reshape(1, 10, 10) / 99
    morf = np.asarray(F.road_keep_mask(maps, 80, "morf"))[0]
    lerf = np.asarray(F.road_keep_mask(maps, 20, "lerf"))[0]
    assert not morf.ravel()[-20:].any() and morf.ravel()[:80].all()
    assert not lerf.ravel()[:80].any() and lerf.ravel()[-20:].all()


# --------------------------------------------------------------------------------------------
# Linear imputation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8, 1), (12, 10, 3), (5, 13, 2)])
@pytest.mark.parametrize("percentile,order", [(80, "morf"), (20, "lerf"), (50, "morf")])
def test_imputation_matches_scipy_sparse_solve(shape, percentile, order):
    rng = np.random.default_rng(sum(shape) + int(percentile))
    images = rng.normal(size=(3,) + shape).astype(np.float32)
    removed = ~np.asarray(F.road_keep_mask(blob_maps(rng, 3, *shape[:2]), percentile, order))
    got, iterations = jax.jit(F.linear_imputation)(images, removed)
    want = np.stack([imputation_statement(i, r) for i, r in zip(images, removed)])
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=0)
    assert int(iterations) < 4 * sum(shape[:2]) + 100        # converged before the cap
    np.testing.assert_array_equal(np.asarray(got)[~removed], images[~removed])


def test_imputation_random_scattered_mask():
    rng = np.random.default_rng(7)
    images = rng.normal(size=(2, 11, 9, 2)).astype(np.float32)
    removed = rng.uniform(size=(2, 11, 9)) < 0.6
    got, _ = F.linear_imputation(images, removed)
    want = np.stack([imputation_statement(i, r) for i, r in zip(images, removed)])
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=0)


def test_imputation_edge_cases():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(3, 6, 6, 2)).astype(np.float32)
    removed = np.zeros((3, 6, 6), bool)
    removed[1] = True                       # everything removed: singular, defined as 0
    removed[2, 2, 3] = True                 # one pixel: the weighted mean of its neighbours
    got = np.asarray(F.linear_imputation(images, removed)[0])
    np.testing.assert_array_equal(got[0], images[0])
    np.testing.assert_array_equal(got[1], 0.0)
    neighbours = images[2, 1:4, 2:5]
    weights = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12
    np.testing.assert_allclose(got[2, 2, 3], np.tensordot(weights, neighbours, 2), atol=1e-6)
    # constant maps under MoRF remove everything; the result is finite
    maps = np.full((3, 6, 6), 0.5, np.float32)
    out = F.road_images(images, maps, 80, "morf", jax.random.PRNGKey(0))
    assert np.isfinite(np.asarray(out)).all()


def test_noise_on_removed_pixels_only_and_independent_of_batch():
    rng = np.random.default_rng(4)
    images = rng.normal(size=(4, 16, 16, 3)).astype(np.float32)
    removed = rng.uniform(size=(4, 16, 16)) < 0.5
    labels = np.array([0, 1, 2, 3])
    key = jax.random.PRNGKey(5)
    clean = np.asarray(F.linear_imputation(images, removed)[0])
    noisy = np.asarray(F.noisy_linear_imputation(images, removed, key, labels, noise=0.01))
    diff = noisy - clean
    np.testing.assert_array_equal(diff[~removed], 0.0)
    assert 0.008 < diff[removed].std() < 0.012
    assert abs(diff[removed].mean()) < 0.002
    # the same image gets the same noise in another batch (order, companions, size)
    perm = [2, 0, 3]
    again = np.asarray(F.noisy_linear_imputation(images[perm], removed[perm], key, labels[perm]))
    np.testing.assert_allclose(again, noisy[perm], atol=1e-6)
    assert not np.allclose(noisy, np.asarray(F.noisy_linear_imputation(
        images, removed, jax.random.PRNGKey(6), labels)))


# --------------------------------------------------------------------------------------------
# Confidence metrics
# --------------------------------------------------------------------------------------------
def confidence_statement(apply_np, images, maps, labels):
    y = softmax_np(apply_np(images))[np.arange(len(labels)), labels]
    o = softmax_np(apply_np(images * maps[..., None]))[np.arange(len(labels)), labels]
    return {"average_drop": np.mean(np.maximum(y - o, 0) / y),
            "increase_in_confidence": np.mean(o > y),
            "mean_absolute_drop": np.mean(np.maximum(y - o, 0))}


def test_confidence_counts_match_numpy_and_merge():
    rng = np.random.default_rng(8)
    apply_np, apply_fn = linear_model()
    images = rng.normal(size=(12, 8, 8, 2)).astype(np.float32)
    maps = rng.uniform(size=(12, 8, 8)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, 12)
    want = confidence_statement(apply_np, images, maps, labels)
    assert 0 < want["increase_in_confidence"] < 1        # both outcomes occur
    whole = jax.jit(F.confidence_counts, static_argnums=0)(apply_fn, images, maps, labels)
    for key, value in whole.result().items():
        np.testing.assert_allclose(float(value), want[key], rtol=1e-5, err_msg=key)
    # two batches, the second padded with garbage marked invalid
    pad_img = np.concatenate([images[7:], rng.normal(size=(3, 8, 8, 2)).astype(np.float32)])
    pad_map = np.concatenate([maps[7:], np.zeros((3, 8, 8), np.float32)])
    pad_lab = np.concatenate([labels[7:], [0, 1, 2]])
    valid = np.arange(8) < 5
    merged = F.confidence_counts(apply_fn, images[:7], maps[:7], labels[:7]).merge(
        F.confidence_counts(apply_fn, pad_img, pad_map, pad_lab, valid))
    assert int(merged.count) == 12 and int(merged.increase) == int(whole.increase)
    chex.assert_trees_all_close(merged.result(), whole.result(), rtol=1e-5)


def test_confidence_of_unit_maps_is_no_change():
    _, apply_fn = linear_model()
    images = np.random.default_rng(9).normal(size=(3, 8, 8, 2)).astype(np.float32)
    res = F.confidence_counts(apply_fn, images, np.ones((3, 8, 8)), np.zeros(3, int)).result()
    assert float(res["average_drop"]) == 0 and float(res["increase_in_confidence"]) == 0


# --------------------------------------------------------------------------------------------
# ROAD counts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order,percentiles", [("morf", (80,)), ("lerf", (20, 50))])
def test_road_counts_match_numpy(order, percentiles):
    rng = np.random.default_rng(10)
    apply_np, apply_fn = linear_model(1)
    images = rng.normal(size=(6, 8, 8, 2)).astype(np.float32)
    maps = blob_maps(rng, 6, 8, 8)
    labels = rng.integers(0, NUM_CLASSES, 6)
    valid = np.array([1, 1, 1, 0, 1, 1], bool)
    counts = jax.jit(F.road_counts, static_argnums=(0, 5, 6), static_argnames="noise")(
        apply_fn, images, maps, labels, jax.random.PRNGKey(0), percentiles, order, valid,
        noise=0.0)
    res = counts.result()
    y = softmax_np(apply_np(images))[np.arange(6), labels]
    for j, p in enumerate(percentiles):
        rel = maps if order == "morf" else 1 - maps
        removed = np.stack([r >= np.percentile(r, p) for r in rel])
        imputed = np.stack([imputation_statement(i, r) for i, r in zip(images, removed)])
        z = apply_np(imputed)
        o = softmax_np(z)[np.arange(6), labels]
        np.testing.assert_allclose(float(res["score_change"][j]), np.mean((o - y)[valid]),
                                   atol=1e-5)
        assert int(counts.correct[j]) == np.sum((z.argmax(1) == labels)[valid])
    assert int(counts.count) == 5


def test_road_noise_changes_little_and_combined():
    rng = np.random.default_rng(11)
    _, apply_fn = linear_model(2)
    images = rng.normal(size=(5, 8, 8, 2)).astype(np.float32)
    maps = blob_maps(rng, 5, 8, 8)
    labels = rng.integers(0, NUM_CLASSES, 5)
    key = jax.random.PRNGKey(1)
    kw = {"percentiles": (20, 80)}
    morf = F.road_counts(apply_fn, images, maps, labels, key, order="morf", **kw)
    lerf = F.road_counts(apply_fn, images, maps, labels, key, order="lerf", **kw)
    clean = F.road_counts(apply_fn, images, maps, labels, key, order="morf", noise=0.0, **kw)
    np.testing.assert_allclose(np.asarray(morf.result()["score_change"]),
                               np.asarray(clean.result()["score_change"]), atol=0.02)
    combined = F.road_combined(morf.result(), lerf.result())
    assert combined == pytest.approx((np.mean(lerf.result()["score_change"])
                                      - np.mean(morf.result()["score_change"])) / 2)


def test_road_counts_refuse_to_merge_across_settings():
    a = F.RoadCounts.empty((80,), "morf")
    with pytest.raises(ValueError):
        a.merge(F.RoadCounts.empty((20,), "lerf"))


@pytest.mark.parametrize("call,match", [
    (lambda: F.road_keep_mask(np.zeros((1, 4, 4)), 0, "morf"), "percentile"),
    (lambda: F.road_keep_mask(np.zeros((1, 4, 4)), 100, "morf"), "percentile"),
    (lambda: F.road_keep_mask(np.zeros((1, 4, 4)), 50, "top"), "order"),
    (lambda: F.road_keep_mask(np.zeros((4, 4)), 50, "morf"), "scoremaps"),
    (lambda: F.RoadCounts.empty((), "morf"), "percentiles"),
    (lambda: F.linear_imputation(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 5), bool)),
     "removed"),
    (lambda: F.linear_imputation(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool)), "images"),
    (lambda: F.linear_imputation(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4), bool),
                                 max_iterations=0), "max_iterations"),
    (lambda: F.noisy_linear_imputation(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4), bool),
                                       jax.random.PRNGKey(0), noise=-1.0), "noise"),
    (lambda: F.explanation_images(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 3))), "scoremaps"),
    (lambda: F.class_scores(np.zeros((2, 3)), np.array([0, 3])), "labels"),
    (lambda: F.ConfidenceCounts.empty().add(np.zeros(2), np.zeros(3)), "scores"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------------------------
# pytorch-grad-cam (when importable)
# --------------------------------------------------------------------------------------------
def test_against_pytorch_grad_cam():
    torch = pytest.importorskip("torch")
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    cmi = pytest.importorskip("pytorch_grad_cam.metrics.cam_mult_image")
    targets_mod = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    rng = np.random.default_rng(12)
    images = rng.normal(size=(4, 8, 8, 2)).astype(np.float32)
    maps = blob_maps(rng, 4, 8, 8)
    labels = rng.integers(0, NUM_CLASSES, 4)
    # imputation without noise
    imputer = road.NoisyLinearImputer(noise=0.0)
    for i in range(4):
        removed = ~np.asarray(F.road_keep_mask(maps[i:i + 1], 80, "morf"))[0]
        theirs = imputer(torch.from_numpy(images[i].transpose(2, 0, 1)),
                         torch.from_numpy((~removed).astype(np.float32)))
        ours = np.asarray(F.linear_imputation(images[i:i + 1], removed[None])[0])[0]
        np.testing.assert_allclose(ours, theirs.numpy().transpose(1, 2, 0), atol=2e-5)
    # confidence metrics with the softmax target on a linear model
    _, apply_fn = linear_model(3)
    kernel = np.asarray(apply_fn(np.eye(8 * 8 * 2, dtype=np.float32).reshape(-1, 8, 8, 2)))

    class Linear(torch.nn.Module):
        def forward(self, x):  # NCHW -> NHWC flatten, as the JAX model
            return x.permute(0, 2, 3, 1).reshape(len(x), -1) @ torch.from_numpy(kernel)

    targets = [targets_mod.ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    cams = maps[:, None]                                   # broadcast over channels
    drop = cmi.DropInConfidence()(x, cams, targets, Linear())
    increase = cmi.IncreaseInConfidence()(x, cams, targets, Linear())
    res = F.confidence_counts(apply_fn, images, maps, labels).result()
    np.testing.assert_allclose(float(res["mean_absolute_drop"]), np.mean(drop), atol=1e-6)
    np.testing.assert_allclose(float(res["increase_in_confidence"]), np.mean(increase))
