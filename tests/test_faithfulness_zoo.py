"""Deletion / insertion, confidence change and complexity; every faithfulness metric in the eval
step.

Against a NumPy statement of each definition (RISE's curves, the trapezoid AUC, SciPy's
``gaussian_filter`` for RISE's blur kernel), against torch-cam's ``DeletionInsertionMetric``
(skipped with the reason when torch-cam is not installed) and a PyTorch statement of RISE's blur
(``conv2d`` of the 11 x 11 kernel, zero padding 5), and against pytorch-grad-cam's
``CamMultImageConfidenceChange``, ``DropInConfidence``, ``IncreaseInConfidence``, ``Complexity``
and the percentile-averaged ROAD classes (``grad_cam`` fixture). The eval-step test runs every
metric of ``FAITHFULNESS_METRICS`` on test_evaluate's tiny model and checks it against the
direct functions.
"""
import contextlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndimage
import test_evaluate as te  # tests/ is on sys.path under pytest
from test_faithfulness import (
    NUM_CLASSES,
    _peer_inputs,
    _peer_module,
    blob_maps,
    linear_model,
    noiseless,
    our_road_per_image,
    peer_case,
    peer_models,
    softmax_np,
)

from infocam_jax import boxes
from infocam_jax.evaluation import driver
from infocam_jax.evaluation import settings as eval_settings
from infocam_jax.maps import posthoc
from infocam_jax.metrics import arcc as A
from infocam_jax.metrics import deletion_insertion as D
from infocam_jax.metrics import faithfulness as F


# --------------------------------------------------------------------------------------------
# NumPy statements
# --------------------------------------------------------------------------------------------
def points_statement(n, steps):
    stride = -(-n // steps)
    return list(range(0, n, stride)) + [n]


def blur_statement(images, size=11, sigma=5.0):
    """RISE's blur in float64: every channel correlated with gaussian_filter(delta, sigma),
    zero padding size // 2."""
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1
    k = ndimage.gaussian_filter(delta, sigma)
    r = size // 2
    pad = np.pad(images.astype(np.float64), ((0, 0), (r, r), (r, r), (0, 0)))
    h, w = images.shape[1:3]
    return sum(k[i, j] * pad[:, i:i + h, j:j + w] for i in range(size) for j in range(size))


def curves_statement(apply_np, images, maps, labels, mode, steps, baseline):
    """``[J + 1, B]``: the class probability as the ``k_j`` most relevant pixels (stable
    descending order) are set to the baseline (deletion) or put back on it (insertion)."""
    base = np.zeros_like(images, np.float64) if baseline == "zeros" else blur_statement(images)
    n = maps.shape[1] * maps.shape[2]
    out = []
    for k in points_statement(n, steps):
        rows = []
        for b in range(len(images)):
            order = np.argsort(-maps[b].ravel(), kind="stable")
            top = np.zeros(n, bool)
            top[order[:k]] = True
            top = top.reshape(maps.shape[1:])[..., None]
            x = (np.where(top, base[b], images[b]) if mode == "deletion"
                 else np.where(top, images[b], base[b]))
            rows.append(softmax_np(apply_np(x[None]))[0, labels[b]])
        out.append(rows)
    return np.asarray(out)


def auc_statement(curve, n, steps):
    t = np.asarray(points_statement(n, steps), np.float64) / n
    return float(np.sum((t[1:] - t[:-1]) * (curve[1:] + curve[:-1]) / 2))


# --------------------------------------------------------------------------------------------
# Pieces: points, ranks, RISE's blur
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,steps", [(100, 20), (120, 7), (5, 20), (224 * 224, 224), (1, 1)])
def test_causal_points(n, steps):
    np.testing.assert_array_equal(D.causal_points(n, steps), points_statement(n, steps))


def test_pixel_ranks_stable_with_ties():
    maps = np.random.default_rng(0).integers(0, 4, (3, 5, 6)).astype(np.float32)
    ranks = np.asarray(jax.jit(D.pixel_ranks)(maps)).reshape(3, -1)
    for m, r in zip(maps, ranks):
        np.testing.assert_array_equal(np.argsort(r), np.argsort(-m.ravel(), kind="stable"))


@pytest.mark.parametrize("size,sigma", [(11, 5.0), (7, 1.3), (3, 0.5), (1, 2.0)])
def test_blur_kernel_is_scipy_gaussian_filter_of_a_delta(size, sigma):
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1
    k = D.blur_kernel(size, sigma)
    np.testing.assert_allclose(np.outer(k, k), ndimage.gaussian_filter(delta, sigma),
                               atol=1e-15)


def test_blurred_images_match_rise_conv2d():
    """RISE's ``blur``: ``conv2d(x, kern, padding=klen // 2)`` with ``kern[i, i]`` the kernel
    (PyTorch statement) and the float64 NumPy statement."""
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(1).normal(size=(2, 13, 9, 3)).astype(np.float32)
    ours = np.asarray(jax.jit(D.blurred_images)(images))
    np.testing.assert_allclose(ours, blur_statement(images), atol=1e-5)
    k2 = torch.from_numpy(np.outer(D.blur_kernel(), D.blur_kernel()).astype(np.float32))
    kern = torch.zeros(3, 3, 11, 11)
    for i in range(3):
        kern[i, i] = k2
    theirs = torch.nn.functional.conv2d(torch.from_numpy(images.transpose(0, 3, 1, 2)), kern,
                                        padding=5).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Curves and counts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", D.CAUSAL_MODES)
@pytest.mark.parametrize("baseline", D.BASELINES)
@pytest.mark.parametrize("steps,chunk_size", [(20, 4), (7, 3), (100, 1)])
def test_curves_match_numpy(mode, baseline, steps, chunk_size):
    rng = np.random.default_rng(steps)
    apply_np, apply_fn = linear_model(2)
    images = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    maps = np.round(blob_maps(rng, 3, 8, 8), 1)                     # ties: raster order
    labels = rng.integers(0, NUM_CLASSES, 3)
    curves = jax.jit(D.causal_curves, static_argnums=(0, 4),
                     static_argnames=("steps", "baseline", "chunk_size"))(
        apply_fn, images, maps, labels, mode, steps=steps, baseline=baseline,
        chunk_size=chunk_size)
    want = curves_statement(apply_np, images, maps, labels, mode, steps, baseline)
    np.testing.assert_allclose(np.asarray(curves), want, atol=1e-5)
    counts = D.CausalCounts.empty(64, mode, steps).add(curves)
    np.testing.assert_allclose(float(counts.result()["auc"]),
                               np.mean([auc_statement(c, 64, steps) for c in want.T]),
                               atol=1e-5)


def test_counts_merge_and_padding():
    rng = np.random.default_rng(3)
    _, apply_fn = linear_model(4)
    images = rng.normal(size=(7, 8, 8, 2)).astype(np.float32)
    maps = blob_maps(rng, 7, 8, 8)
    labels = rng.integers(0, NUM_CLASSES, 7)
    whole = D.causal_counts(apply_fn, images, maps, labels, "insertion", steps=9)
    pad = np.concatenate([images[4:], rng.normal(size=(2, 8, 8, 2)).astype(np.float32)])
    merged = D.causal_counts(apply_fn, images[:4], maps[:4], labels[:4], "insertion",
                             steps=9).merge(
        D.causal_counts(apply_fn, pad, np.concatenate([maps[4:], maps[:2]]),
                        np.concatenate([labels[4:], [0, 1]]), "insertion",
                        np.arange(5) < 3, steps=9))
    assert int(merged.count) == 7
    chex.assert_trees_all_close(merged.result(), whole.result(), atol=1e-6)


def test_deletion_separates_a_faithful_map_from_its_reverse():
    """On a linear model the map ``x * w_c`` (the class evidence) deletes faster than its
    negation: deletion AUC lower, insertion AUC higher."""
    apply_np, apply_fn = linear_model(5, (8, 8, 1))
    images = np.random.default_rng(5).normal(size=(4, 8, 8, 1)).astype(np.float32)
    labels = np.array([0, 1, 2, 3])
    kernel = np.asarray(apply_fn(np.eye(64, dtype=np.float32).reshape(64, 8, 8, 1)))
    evidence = images[..., 0] * kernel[:, labels].T.reshape(4, 8, 8)
    auc = {(mode, sign): float(D.causal_counts(apply_fn, images, sign * evidence, labels, mode,
                                               baseline="zeros").result()["auc"])
           for mode in D.CAUSAL_MODES for sign in (1, -1)}
    assert auc["deletion", 1] < auc["deletion", -1]
    assert auc["insertion", 1] > auc["insertion", -1]


# --------------------------------------------------------------------------------------------
# torch-cam's DeletionInsertionMetric
# --------------------------------------------------------------------------------------------
class _GivenMaps:
    """torch-cam's CAM-extractor protocol around fixed maps (a tensor ``[B, H, W]`` at the
    input resolution: its bilinear resize to the same size is the identity)."""

    def __init__(self, model, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


@pytest.mark.parametrize("model", ["linear", "mlp"])
@pytest.mark.parametrize("steps", [20, 7, 200])
def test_equals_torchcam(model, steps):
    """torch-cam integrates one baseline for both curves: zeros (its default) for deletion,
    RISE's blur (a callable baseline) for insertion, each compared with ours."""
    torch = pytest.importorskip("torch")
    tcm = pytest.importorskip("torchcam.metrics", reason="torch-cam is not installed")
    images, maps, labels = peer_case(21)
    apply_fn, net = peer_models(model, images.shape[1:])
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    extractor = _GivenMaps(net, torch.from_numpy(maps))
    blur = torch.from_numpy(np.asarray(D.blurred_images(images)).transpose(0, 3, 1, 2).copy())
    for mode, baseline in (("deletion", None), ("insertion", lambda t: blur)):
        metric = tcm.DeletionInsertionMetric(extractor, lambda z: torch.softmax(z, -1),
                                             steps=steps, baseline=baseline, batch_size=16)
        metric.update(x, [int(c) for c in labels])
        theirs = metric.summary()[f"{mode}_auc"]
        ours = D.causal_counts(apply_fn, images, maps, labels, mode, steps=steps).result()
        assert abs(float(ours["auc"]) - theirs) < 2e-6, mode


# --------------------------------------------------------------------------------------------
# pytorch-grad-cam: confidence metrics, complexity, percentile-averaged ROAD
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_confidence_metrics_equal_peer(grad_cam, model):
    del grad_cam
    cmi = _peer_module("metrics.cam_mult_image")
    images, maps, labels = peer_case(22, batch=6)
    apply_fn, net = peer_models(model, images.shape[1:])
    x, targets = _peer_inputs(images, labels)
    cams = maps[:, None]
    change = cmi.CamMultImageConfidenceChange()(x, cams, targets, net)
    assert np.any(change > 0) and np.any(change < 0)
    res = F.confidence_counts(apply_fn, images, maps, labels).result()
    np.testing.assert_allclose(float(res["mean_confidence_change"]), np.mean(change), atol=1e-6)
    np.testing.assert_allclose(float(res["mean_absolute_drop"]),
                               np.mean(cmi.DropInConfidence()(x, cams, targets, net)), atol=1e-6)
    np.testing.assert_allclose(float(res["increase_in_confidence"]),
                               np.mean(cmi.IncreaseInConfidence()(x, cams, targets, net)))


def test_complexity_equals_peer(grad_cam):
    del grad_cam
    arcc = _peer_module("metrics.arcc")
    rng = np.random.default_rng(23)
    maps = np.concatenate([blob_maps(rng, 3, 9, 7), np.zeros((1, 9, 7), np.float32)])
    theirs = arcc.Complexity()(maps)
    counts = jax.jit(F.complexity_counts)(maps, np.array([1, 1, 0, 1], bool))
    np.testing.assert_allclose(float(counts.result()["complexity"]),
                               np.mean(theirs[[0, 1, 3]]), rtol=1e-6)


@pytest.mark.parametrize("order", F.ROAD_ORDERS)
@pytest.mark.parametrize("percentile", [10, 33.3, 50, 55.5, 90, 99])
def test_keep_mask_is_numpy_percentile_bit_for_bit(order, percentile):
    """Maps crowded near 0 and 1 (blobs: ``1 − L`` rounds in float32), jitted: the threshold
    is NumPy's float32 value, so no pixel at the threshold flips (the peer's
    ``np.percentile``)."""
    rng = np.random.default_rng(int(percentile * 10))
    maps = np.concatenate([blob_maps(rng, 6, 12, 10), peer_case(24)[1],  # a tie at lerf 90
                           1 - rng.uniform(size=(6, 12, 10)) ** 20]).astype(np.float32)
    got = np.asarray(jax.jit(F.road_keep_mask, static_argnums=(1, 2))(maps, percentile, order))
    for m, g in zip(maps, got):
        rel = m if order == "morf" else np.float32(1) - m
        np.testing.assert_array_equal(g, rel < np.percentile(rel, percentile))


@pytest.mark.parametrize("percentiles", [(20, 40, 60, 80), (10, 50, 90)])
def test_road_averages_per_image_equal_peer(grad_cam, percentiles):
    """``ROADMostRelevantFirstAverage`` / ``ROADLeastRelevantFirstAverage`` per image (noise 0)
    are the percentile means of our per-percentile changes."""
    del grad_cam
    road = _peer_module("metrics.road")
    images, maps, labels = peer_case(24)
    apply_fn, net = peer_models("mlp", images.shape[1:])
    x, targets = _peer_inputs(images, labels)
    for order, averager, cls in (
            ("morf", road.ROADMostRelevantFirstAverage, road.ROADMostRelevantFirst),
            ("lerf", road.ROADLeastRelevantFirstAverage, road.ROADLeastRelevantFirst)):
        metric = averager(list(percentiles))
        metric.imputer = lambda p, cls=cls: noiseless(cls(p))
        ours = our_road_per_image(apply_fn, images, maps, labels, percentiles, order).mean(0)
        np.testing.assert_allclose(ours, metric(x, maps, targets, net), atol=5e-5, rtol=0)


# --------------------------------------------------------------------------------------------
# The eval step
# --------------------------------------------------------------------------------------------
ZOO_KINDS = ("cam", "gradcam")
ZOO_CONFIG = {"map_kinds": ZOO_KINDS, "eval_faithfulness": eval_settings.FAITHFULNESS_METRICS,
              "eval_box_accuracy": False, "road_morf_percentiles": (50,),
              "road_lerf_percentiles": (50,), "causal_steps": 9, "causal_chunk_size": 3}


@pytest.mark.parametrize("kind", ZOO_KINDS)
def test_eval_step_runs_every_metric(kind):
    """Every metric of the eval step (split, padded batches) equals the direct functions on
    the eval's score maps (one map kind per test: two eval steps that compile in parallel)."""
    model = te.TinyNet(te.NUM_CLASSES)
    variables, data = te.tiny_variables(model), te.make_data()
    config = te.make_config(**{**ZOO_CONFIG, "map_kinds": (kind,)})
    res = driver.evaluate(config, model, variables, te.split_batches(data, 4), num_devices=1)
    settings = eval_settings.EvalSettings.from_config(config)
    images, labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
    kernel = variables["params"]["head"]["kernel"]

    def apply_fn(x):
        return model.apply(variables, x, train=False)[0]

    def scoremaps_of(kind, x, labels):
        features = model.apply(variables, x, train=False)[1]
        maps = (jnp.einsum("bhwk,kb->bhw", features, kernel[:, labels]) if kind == "cam"
                else posthoc.compute(kind, model, variables, x, labels))
        return boxes.scoremaps(maps, settings.image_size, settings.upsample)

    sm = scoremaps_of(kind, images, labels)
    want = {**F.confidence_counts(apply_fn, images, sm, labels).result(),
            **F.complexity_counts(sm).result()}
    for mode in D.CAUSAL_MODES:
        want[f"{mode}_auc"] = D.causal_counts(apply_fn, images, sm, labels, mode,
                                              steps=9).result()["auc"]
    key = jax.random.PRNGKey(settings.road_seed)
    road = {order: F.road_counts(apply_fn, images, sm, labels, key, (50,), order).result()
            for order in F.ROAD_ORDERS}
    want["road_morf"] = road["morf"]["score_change"][0]
    want["road_combined"] = F.road_combined(road["morf"], road["lerf"])
    want.update(A.arcc_counts(apply_fn, lambda x, y: scoremaps_of(kind, x, y),
                              images, sm, labels, key).result())
    for name, value in want.items():
        assert res[f"{kind}/{name}"] == pytest.approx(float(value), abs=2e-6), name
    assert {k.split("/", 1)[1] for k in res if k.startswith(f"{kind}/")} >= {
        "deletion_auc", "insertion_auc", "complexity", "mean_confidence_change",
        "road_combined", "arcc", "coherency"}


def test_settings_read_the_causal_fields():
    s = eval_settings.EvalSettings.from_config(te.make_config(**ZOO_CONFIG))
    assert (s.causal_steps, s.causal_chunk_size) == (9, 3)
    assert (s.deletion_baseline, s.insertion_baseline) == ("zeros", "blur")
    assert s.faithfulness == eval_settings.FAITHFULNESS_METRICS


# --------------------------------------------------------------------------------------------
# Coherency and ARCC (pytorch-grad-cam's metrics.arcc)
# --------------------------------------------------------------------------------------------
def _energy_maps(x):
    """A stand-in map method of NHWC images: channel-mean of x², divided by its image max."""
    e = jnp.mean(jnp.asarray(x) ** 2, axis=-1)
    return e / jnp.max(e, axis=(1, 2), keepdims=True)


def _peer_energy_maps(input_tensor, targets):
    """The same map method as the peer's ``base_method(input_tensor=, targets=)``."""
    del targets
    return np.asarray(_energy_maps(input_tensor.numpy().transpose(0, 2, 3, 1)))


def test_pearson_coherency_matches_numpy():
    rng = np.random.default_rng(25)
    a, b = rng.uniform(size=(2, 4, 7, 5)).astype(np.float32)
    b[1] = a[1]                                                         # coherency 1
    got = np.asarray(A.pearson_coherency(a, b))
    want = [(np.corrcoef(x.ravel(), y.ravel())[0, 1] + 1) / 2 for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[1] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("model,percentiles", [("linear", (20, 40, 60, 80)), ("mlp", (30, 70))])
def test_coherency_and_arcc_equal_peer(grad_cam, model, percentiles):
    """``Coherency`` and ``ARCC`` per image with the same map method on both sides and the
    ROAD imputation noiseless (the peer's ``noise`` attribute)."""
    del grad_cam
    arcc_mod, road = _peer_module("metrics.arcc"), _peer_module("metrics.road")
    images, maps, labels = peer_case(26)
    maps = np.array(_energy_maps(images))                # the map method's own maps
    apply_fn, net = peer_models(model, images.shape[1:])
    x, targets = _peer_inputs(images, labels)
    coh = arcc_mod.Coherency()(x, maps, targets, net, _peer_energy_maps)
    peer = arcc_mod.ARCC(_peer_energy_maps, list(percentiles))
    for averager, cls in ((peer.road.morf_averager, road.ROADMostRelevantFirst),
                          (peer.road.lerf_averager, road.ROADLeastRelevantFirst)):
        averager.imputer = lambda p, cls=cls: noiseless(cls(p))
    theirs = peer(x, maps, targets, net)

    def maps_fn(images, labels):
        del labels
        return _energy_maps(images)

    ours = jax.jit(A.arcc_per_image, static_argnums=(0, 1),
                   static_argnames=("percentiles", "noise"))(
        apply_fn, maps_fn, images, maps, labels, jax.random.PRNGKey(0),
        percentiles=percentiles, noise=0.0)
    np.testing.assert_allclose(np.asarray(ours["coherency"]), coh, atol=1e-5)
    assert np.max(np.asarray(ours["road"])) > 0          # the ROAD term is not clipped away
    np.testing.assert_allclose(np.asarray(ours["arcc"]), theirs, atol=1e-4)
    counts = A.arcc_counts(apply_fn, maps_fn, images, maps, labels, jax.random.PRNGKey(0),
                           np.arange(5) != 2, percentiles=percentiles, noise=0.0)
    np.testing.assert_allclose(float(counts.result()["arcc"]), np.mean(np.delete(theirs, 2)),
                               atol=1e-4)
