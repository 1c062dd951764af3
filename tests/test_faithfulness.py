"""Tests of infocam_jax.metrics.faithfulness against plain NumPy / SciPy statements of each definition.

The ROAD imputation is checked against a SciPy sparse solve of the system written pixel by
pixel; the confidence and ROAD counters against NumPy loops over images with a linear model;
streaming against one-shot (split batches, padding); the CG solver's non-convergence report;
pytorch-grad-cam's own metric classes (``ROADMostRelevantFirst``, ``ROADLeastRelevantFirst``,
their percentile averages, ``ROADCombined``, ``DropInConfidence``, ``IncreaseInConfidence``) on
the same models, images and maps, through the ``grad_cam`` fixture (``conftest.py``: skips with
the reason without torch or the peer, fails on CI).
"""
import importlib

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
    got, iterations, residual = jax.jit(F.linear_imputation)(images, removed)
    want = np.stack([imputation_statement(i, r) for i, r in zip(images, removed)])
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=0)
    assert int(iterations) < 4 * sum(shape[:2]) + 100        # converged before the cap
    assert np.all(np.asarray(residual) <= 1e-5)
    np.testing.assert_array_equal(np.asarray(got)[~removed], images[~removed])


def test_imputation_random_scattered_mask():
    rng = np.random.default_rng(7)
    images = rng.normal(size=(2, 11, 9, 2)).astype(np.float32)
    removed = rng.uniform(size=(2, 11, 9)) < 0.6
    got, _, _ = F.linear_imputation(images, removed)
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
# Non-convergence of the CG solve: an error on concrete inputs, a count under jit
# --------------------------------------------------------------------------------------------
def unconverged_case():
    """16x16 images with a removed blob (MoRF 50: ~128 unknowns, tens of CG steps)."""
    rng = np.random.default_rng(13)
    images = rng.normal(size=(3, 16, 16, 2)).astype(np.float32)
    maps = blob_maps(rng, 3, 16, 16)
    return images, maps, rng.integers(0, NUM_CLASSES, 3)


def test_imputation_reports_its_residual():
    images, maps, _ = unconverged_case()
    removed = ~np.asarray(F.road_keep_mask(maps, 50, "morf"))
    _, iterations, residual = F.linear_imputation(images, removed)
    assert 1 < int(iterations) < 4 * 32 + 100 and np.all(np.asarray(residual) <= 1e-5)
    _, iterations, residual = F.linear_imputation(images, removed, max_iterations=1)
    assert int(iterations) == 1 and np.all(np.asarray(residual) > 1e-5)
    # one removed pixel: its Jacobi-preconditioned system is solved in one step
    one = np.zeros_like(removed)
    one[:, 5, 7] = True
    _, iterations, residual = F.linear_imputation(images, one, max_iterations=1)
    assert int(iterations) == 1 and np.all(np.asarray(residual) <= 1e-5)


def test_unconverged_imputation_raises_on_concrete_inputs():
    images, maps, labels = unconverged_case()
    removed = ~np.asarray(F.road_keep_mask(maps, 50, "morf"))
    key = jax.random.PRNGKey(0)
    match = r"max_iterations=1 above tol=1e-05 for 3 of 3 images \(first: image 0"
    with pytest.raises(F.ImputationNotConverged, match=match):
        F.noisy_linear_imputation(images, removed, key, max_iterations=1)
    with pytest.raises(F.ImputationNotConverged, match="max_iterations=1"):
        F.noisy_linear_imputation(images, removed, key, noise=0.0, max_iterations=1)
    with pytest.raises(F.ImputationNotConverged, match="max_iterations=1"):
        F.road_images(images, maps, 50, "morf", key, max_iterations=1)
    _, apply_fn = linear_model(4, (16, 16, 2))
    with pytest.raises(F.ImputationNotConverged, match="max_iterations=1"):
        F.road_counts(apply_fn, images, maps, labels, key, (50,), max_iterations=1)
    # the residual asked for instead: no error
    out, residual = F.road_images(images, maps, 50, "morf", key, max_iterations=1,
                                  with_residual=True)
    assert out.shape == images.shape and np.all(np.asarray(residual) > 1e-5)
    # the default cap converges
    F.road_images(images, maps, 50, "morf", key)
    # a constant map removes every pixel (zero system, solved at once); unconverged images
    # marked invalid pass
    one = maps.copy()
    one[0] = 0.5
    with pytest.raises(F.ImputationNotConverged, match="for 2 of 3 images .first: image 1"):
        F.road_counts(apply_fn, images, one, labels, key, (50,), max_iterations=1)
    easy = F.road_counts(apply_fn, images, one, labels, key, (50,), "morf",
                         np.array([1, 0, 0], bool),
                         max_iterations=1)
    assert int(easy.unconverged[0]) == 0 and int(easy.count) == 1


def test_unconverged_imputation_is_counted_under_jit():
    images, maps, labels = unconverged_case()
    _, apply_fn = linear_model(4, (16, 16, 2))
    key = jax.random.PRNGKey(0)
    road = jax.jit(F.road_counts, static_argnums=(0, 5, 6),
                   static_argnames=("noise", "max_iterations"))
    capped = road(apply_fn, images, maps, labels, key, (20, 50), "morf",
                  np.array([True, False, True]), max_iterations=1)
    np.testing.assert_array_equal(np.asarray(capped.result()["unconverged"]), [2, 2])
    merged = capped.merge(capped)
    np.testing.assert_array_equal(np.asarray(merged.unconverged), [4, 4])
    clean = road(apply_fn, images, maps, labels, key, (20, 50), "morf", None)
    np.testing.assert_array_equal(np.asarray(clean.result()["unconverged"]), [0, 0])
    # the eval step's path: road_images(with_residual=True) under jit, RoadCounts.add
    def per_percentile(images, maps):
        return F.road_images(images, maps, 50, "morf", key, max_iterations=1,
                             with_residual=True)

    imputed, residual = jax.jit(per_percentile)(images, maps)
    y = F.class_scores(apply_fn(images), labels)
    counts = F.RoadCounts.empty((50,), "morf").add(y, apply_fn(imputed)[None], labels,
                                                   residual=residual[None])
    assert int(counts.unconverged[0]) == 3


# --------------------------------------------------------------------------------------------
# Confidence metrics
# --------------------------------------------------------------------------------------------
def confidence_statement(apply_np, images, maps, labels):
    y = softmax_np(apply_np(images))[np.arange(len(labels)), labels]
    o = softmax_np(apply_np(images * maps[..., None]))[np.arange(len(labels)), labels]
    return {"average_drop": np.mean(np.maximum(y - o, 0) / y),
            "increase_in_confidence": np.mean(o > y),
            "mean_absolute_drop": np.mean(np.maximum(y - o, 0)),
            "mean_confidence_change": np.mean(o - y)}


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
        np.testing.assert_allclose(float(value), want[key], rtol=1e-5, atol=1e-7, err_msg=key)
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
    np.testing.assert_array_equal(np.asarray(res["unconverged"]), 0)


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
    (lambda: F.RoadCounts.empty((50,), "morf").add(np.zeros(2), np.zeros((1, 2, 3)),
                                                   np.zeros(2, int), residual=np.zeros(2)),
     "residual"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------------------------
# pytorch-grad-cam's metric classes (the grad_cam fixture)
# --------------------------------------------------------------------------------------------
def _peer_module(name):
    """A submodule of the peer, imported after the ``grad_cam`` fixture (stand-in in place)."""
    return importlib.import_module(f"pytorch_grad_cam.{name}")


def peer_models(name, shape):
    """``(apply_fn, torch module)``, the same function of NHWC images in JAX and PyTorch:
    "linear" (logits = flat x @ K) or "mlp" (tanh hidden layer of 16)."""
    import torch  # pylint: disable=import-outside-toplevel  # after the grad_cam fixture
    rng = np.random.default_rng(20)
    n = int(np.prod(shape))
    if name == "linear":
        layers = [rng.normal(size=(n, NUM_CLASSES)).astype(np.float32) * 0.3]
    else:
        layers = [rng.normal(size=(n, 16)).astype(np.float32) * 0.2,
                  rng.normal(size=(16, NUM_CLASSES)).astype(np.float32)]

    def apply_fn(x):
        h = x.reshape(x.shape[0], -1)
        for j, w in enumerate(layers):
            h = jnp.dot(jnp.tanh(h) if j else h, w, precision="highest")
        return h

    class Net(torch.nn.Module):
        def forward(self, x):  # NCHW -> NHWC flatten, as the JAX model
            h = x.permute(0, 2, 3, 1).reshape(len(x), -1)
            for j, w in enumerate(layers):
                h = (torch.tanh(h) if j else h) @ torch.from_numpy(w)
            return h

    return apply_fn, Net().eval()


def peer_case(seed=14, batch=5, shape=(12, 10, 3)):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(batch,) + shape).astype(np.float32)
    maps = blob_maps(rng, batch, *shape[:2])
    return images, maps, rng.integers(0, NUM_CLASSES, batch)


def noiseless(metric):
    """A peer ROAD metric with its ``NoisyLinearImputer``'s noise set to 0 (its classes fix
    the default 0.01; the imputer's ``noise`` attribute is the peer's own setting)."""
    metric.perturbation.imputer.noise = 0.0
    return metric


def our_road(apply_fn, images, maps, labels, percentiles, order, noise=0.0, key=0):
    road = jax.jit(F.road_counts, static_argnums=(0, 5, 6), static_argnames="noise")
    counts = road(apply_fn, images, maps, labels, jax.random.PRNGKey(key), tuple(percentiles),
                  order, noise=noise)
    np.testing.assert_array_equal(np.asarray(counts.unconverged), 0)
    return counts.result()


def our_road_per_image(apply_fn, images, maps, labels, percentiles, order):
    """O_c − Y_c per percentile and image ``[P, B]`` (noise 0): what the peer's metric returns
    per image."""
    def changes(images, maps, labels):
        y = F.class_scores(apply_fn(images), labels)
        imputed, residual = zip(*[F.road_images(images, maps, p, order, jax.random.PRNGKey(0),
                                                noise=0.0, with_residual=True)
                                  for p in percentiles])
        return (jnp.stack([F.class_scores(apply_fn(im), labels) - y for im in imputed]),
                jnp.stack(residual))

    change, residual = jax.jit(changes)(images, maps, labels)
    assert np.all(np.asarray(residual) <= F.DEFAULT_TOL)
    return np.asarray(change)


def _peer_inputs(images, labels):
    import torch  # pylint: disable=import-outside-toplevel  # after the grad_cam fixture
    targets = _peer_module("utils.model_targets")
    return (torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
            [targets.ClassifierOutputSoftmaxTarget(int(c)) for c in labels])


@pytest.mark.parametrize("model", ["linear", "mlp"])
@pytest.mark.parametrize("order,percentile", [("morf", 80), ("morf", 50), ("morf", 20),
                                              ("lerf", 20), ("lerf", 50), ("lerf", 90)])
def test_road_equals_peer_classes(grad_cam, model, order, percentile):
    """``ROADMostRelevantFirst(p)`` / ``ROADLeastRelevantFirst(p)`` per image and their mean."""
    del grad_cam
    road = _peer_module("metrics.road")
    images, maps, labels = peer_case()
    apply_fn, net = peer_models(model, images.shape[1:])
    x, targets = _peer_inputs(images, labels)
    cls = road.ROADMostRelevantFirst if order == "morf" else road.ROADLeastRelevantFirst
    theirs = noiseless(cls(percentile))(x, maps, targets, net)                     # [B]
    assert np.abs(theirs).max() > 1e-3                   # the removal changes the scores
    np.testing.assert_allclose(our_road_per_image(apply_fn, images, maps, labels, (percentile,),
                                                  order)[0], theirs, atol=5e-5, rtol=0)
    ours = our_road(apply_fn, images, maps, labels, (percentile,), order)
    np.testing.assert_allclose(float(ours["score_change"][0]), np.mean(theirs), atol=5e-5)


@pytest.mark.parametrize("model", ["linear", "mlp"])
@pytest.mark.parametrize("percentiles", [(10, 20, 30, 40, 50, 60, 70, 80, 90), (30, 70)])
def test_road_averages_and_combined_equal_peer(grad_cam, model, percentiles):
    """``ROADMostRelevantFirstAverage``, ``ROADLeastRelevantFirstAverage`` and ``ROADCombined``
    (mean over images) against the percentile means of :class:`RoadCounts` and
    :func:`road_combined`."""
    del grad_cam
    road = _peer_module("metrics.road")
    images, maps, labels = peer_case(15)
    apply_fn, net = peer_models(model, images.shape[1:])
    x, targets = _peer_inputs(images, labels)
    morf_avg = road.ROADMostRelevantFirstAverage(list(percentiles))
    lerf_avg = road.ROADLeastRelevantFirstAverage(list(percentiles))
    combined = road.ROADCombined(list(percentiles))
    for averager, cls in ((morf_avg, road.ROADMostRelevantFirst),
                          (lerf_avg, road.ROADLeastRelevantFirst),
                          (combined.morf_averager, road.ROADMostRelevantFirst),
                          (combined.lerf_averager, road.ROADLeastRelevantFirst)):
        averager.imputer = lambda p, cls=cls: noiseless(cls(p))
    morf = our_road(apply_fn, images, maps, labels, percentiles, "morf")
    lerf = our_road(apply_fn, images, maps, labels, percentiles, "lerf")
    np.testing.assert_allclose(np.mean(morf["score_change"]),
                               np.mean(morf_avg(x, maps, targets, net)), atol=5e-5)
    np.testing.assert_allclose(np.mean(lerf["score_change"]),
                               np.mean(lerf_avg(x, maps, targets, net)), atol=5e-5)
    theirs = combined(x, maps, targets, net)                                     # [B]
    assert np.abs(theirs).max() > 1e-3
    np.testing.assert_allclose(F.road_combined(morf, lerf), np.mean(theirs), atol=5e-5)
    # per image: (mean over percentiles of LeRF − of MoRF) / 2
    per_image = (our_road_per_image(apply_fn, images, maps, labels, percentiles, "lerf").mean(0)
                 - our_road_per_image(apply_fn, images, maps, labels, percentiles, "morf").mean(0))
    np.testing.assert_allclose(per_image / 2, theirs, atol=5e-5, rtol=0)


def test_road_with_noise_near_peer(grad_cam):
    """Both with their default noise (0.01; different draws): ``ROADCombined`` and ours agree
    to within the noise's effect, and each stays near its noiseless value."""
    del grad_cam
    import torch  # pylint: disable=import-outside-toplevel
    road = _peer_module("metrics.road")
    images, maps, labels = peer_case(16)
    apply_fn, net = peer_models("mlp", images.shape[1:])
    x, targets = _peer_inputs(images, labels)
    percentiles = (20, 50, 80)
    torch.manual_seed(0)
    theirs = float(np.mean(road.ROADCombined(list(percentiles))(x, maps, targets, net)))
    ours = F.road_combined(our_road(apply_fn, images, maps, labels, percentiles, "morf", 0.01),
                           our_road(apply_fn, images, maps, labels, percentiles, "lerf", 0.01))
    clean = F.road_combined(our_road(apply_fn, images, maps, labels, percentiles, "morf"),
                            our_road(apply_fn, images, maps, labels, percentiles, "lerf"))
    assert abs(ours - theirs) < 0.01 and abs(ours - clean) < 0.01


def test_against_pytorch_grad_cam(grad_cam):
    """Imputation without noise (``NoisyLinearImputer``) and the confidence metrics."""
    del grad_cam
    import torch  # pylint: disable=import-outside-toplevel
    road = _peer_module("metrics.road")
    cmi = _peer_module("metrics.cam_mult_image")
    targets_mod = _peer_module("utils.model_targets")
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
