"""Evaluation of the multi-branch WSOL methods: ``cams.fuse`` / ``cams.fused_maps`` against a
NumPy statement of the reference's ACoL fusion, and ACoL / SPG digits models through the eval
step (one and two devices) and ``predict_maps``, whose maps must equal the maps fused by hand
from the model applied with the ground-truth labels."""
import dataclasses
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from infocam_jax.maps import cams
from infocam_jax import methods
from infocam_jax.evaluation import backends, driver, forward
from infocam_jax.evaluation.settings import EvalSettings

import two_devices  # tests/two_devices.py (tests/ is on sys.path under pytest)

SIZE, M, R = 16, 5, 3
KINDS = ("cam", "infocam", "infocam_plus")


# ----------------------------------------------------------------------------- NumPy statements

def region_sum_same(m, r):
    """[B, h, w]: sum over the R x R square starting (R-1)//2 above / left of each cell."""
    lo = (r - 1) // 2
    padded = np.pad(m, ((0, 0), (lo, r - 1 - lo), (lo, r - 1 - lo)))
    h, w = m.shape[1:]
    return sum(padded[:, a:a + h, c:c + w] for a in range(r) for c in range(r))


def branch_maps(g, kernel, labels, logits, r=R):
    """CAM, infoCAM, infoCAM+ (image rival) of one branch, float64 [B, h, w] each."""
    g, kernel = np.asarray(g, np.float64), np.asarray(kernel, np.float64)
    own = kernel[:, labels].T                                            # [B, K]
    others = (kernel.sum(1)[None] - own) / (kernel.shape[1] - 1)
    rival = kernel[:, np.argmin(np.asarray(logits), axis=1)].T
    dot = lambda w: np.einsum("bhwk,bk->bhw", g, w)  # noqa: E731
    return {"cam": dot(own), "infocam": region_sum_same(dot(own - others), r),
            "infocam_plus": region_sum_same(dot(own - rival), r)}


def minmax(m):
    """The reference's normalize_tensor over (h, w) per image; 0 where constant (ours)."""
    lo, hi = m.min((1, 2), keepdims=True), m.max((1, 2), keepdims=True)
    span = hi - lo
    return np.where(span > 0, (m - lo) / np.where(span > 0, span, 1), 0.0)


def hand_maps(method, model, variables, images, labels):
    """The method's fused maps by hand: apply with labels=GT, per-branch maps, fusion."""
    out = model.apply(variables, images, train=False, labels=labels)
    p = variables["params"]
    if method == "acol":
        a = branch_maps(out.features_a, p["acol"]["a_head"]["kernel"], labels, out.logits)
        b = branch_maps(out.features_b, p["acol"]["b_head"]["kernel"], labels, out.logits_b)
        return out.logits, {k: np.maximum(minmax(a[k]), minmax(b[k])) for k in KINDS}
    return out.logits, branch_maps(out.features, p["spg"]["a4"]["kernel"], labels, out.logits)


# ----------------------------------------------------------------------------- fusion

@dataclasses.dataclass
class FakeBranch:
    features: np.ndarray
    kernel: np.ndarray
    logits: np.ndarray


def _branches(seed, n=2, b=3, h=5, w=6, k=4):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        g = rng.normal(size=(b, h, w, k)).astype(np.float32)
        kern = rng.normal(size=(k, M)).astype(np.float32)
        out.append(FakeBranch(g, kern, rng.normal(size=(b, M)).astype(np.float32)))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_fused_maps_max_minmax_equals_numpy(seed):
    branches = _branches(seed)
    labels = np.array([0, 3, 4])
    got = cams.fused_maps(branches, labels, R, fusion="max_minmax")
    per = [branch_maps(b.features, b.kernel, labels, b.logits) for b in branches]
    for kind in KINDS:
        want = np.maximum(minmax(per[0][kind]), minmax(per[1][kind]))
        np.testing.assert_allclose(np.asarray(got[kind]), want, rtol=1e-5, atol=1e-6)
        assert float(jnp.min(got[kind])) >= 0.0 and float(jnp.max(got[kind])) <= 1.0


def test_fused_maps_single_is_branch_zero_all_maps():
    branches = _branches(2)
    labels = np.array([1, 1, 2])
    got = cams.fused_maps(branches, labels, R, fusion="single")
    want = cams.all_maps(branches[0].features, branches[0].kernel, labels, R,
                         logits=branches[0].logits)
    for kind in KINDS:
        np.testing.assert_array_equal(np.asarray(got[kind]), np.asarray(want[kind]))


def test_fuse_constant_branch_counts_zero_and_bad_input():
    m = np.random.default_rng(0).normal(size=(2, 3, 3)).astype(np.float32)
    const = np.full_like(m, 5.0)
    np.testing.assert_allclose(np.asarray(cams.fuse([const, m], "max_minmax")), minmax(m),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="fusion"):
        cams.fuse([m], "mean")
    with pytest.raises(ValueError, match="branch_maps"):
        cams.fuse([m, m[:, :2]], "max_minmax")


# ----------------------------------------------------------------------------- models

def make_model(method):
    model = methods.create_model("digits_cnn", M, method=method, width=4)
    images = jax.random.normal(jax.random.PRNGKey(3), (8, SIZE, SIZE, 1))
    variables = model.init({"params": jax.random.PRNGKey(4)}, images[:1], train=False)
    return model, variables


def make_data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x0, y0 = rng.integers(0, 8, (2, n))
    boxes = np.stack([x0, y0, x0 + rng.integers(3, 8, n), y0 + rng.integers(3, 8, n)],
                     -1)[:, None].astype(np.int32)
    return {"image": rng.normal(size=(n, SIZE, SIZE, 1)).astype(np.float32),
            "label": rng.integers(0, M, n).astype(np.int32), "boxes": boxes,
            "box_valid": np.ones((n, 1), bool), "valid": np.ones(n, bool)}


def make_config():
    return ml_collections.ConfigDict({
        "image_size": (SIZE, SIZE), "upsample": "bicubic", "region_size": R,
        "cam_threshold": 0.2, "iou_threshold": 0.5, "num_box_thresholds": 10,
        "multi_label": False, "num_classes": M, "map_kinds": KINDS})


@dataclasses.dataclass(frozen=True)
class MapStub:
    """``(logits, features)`` stub fed image-size images ``[B, SIZE, SIZE, 1 + M]``: its
    features are the ``grid = (h, w)`` top-left corner of ``image[..., :1]`` (a map at feature
    size, one channel), its logits ``image[:, 0, 0, 1:]``; with an all-ones kernel its CAM is
    that map."""
    grid: tuple[int, int]

    def apply(self, variables, images, train=False):
        del variables, train
        h, w = self.grid
        return images[:, 0, 0, 1:], images[:, :h, :w, :1]


def stub_kernel(variables):
    del variables
    return jnp.ones((1, M))


def stub_images(maps, logits):
    """``[B, SIZE, SIZE, 1 + M]`` images carrying feature-size ``maps [B, h, w]`` in the
    top-left corner of channel 0 (zeros elsewhere) and ``logits [B, M]`` in channels 1:."""
    b, h, w = maps.shape
    images = np.zeros((b, SIZE, SIZE, 1 + M), np.float32)
    images[:, :h, :w, 0] = maps
    images[..., 1:] = np.asarray(logits)[:, None, None, :]
    return images


def stub_results(method, data):
    """Eval-step results of each kind K of ``method``'s model, computed instead from the map K
    fused by hand and read as the stub's CAM (the stub returns it at feature size, so
    upsampling and boxes then run exactly as for the model)."""
    model, variables = make_model(method)
    logits, maps = hand_maps(method, model, variables, data["image"], data["label"])
    out = {}
    for kind in KINDS:
        m = maps[kind].astype(np.float32)
        stub_data = dict(data, image=stub_images(m, logits))
        res = driver.evaluate(make_config(), MapStub(m.shape[1:]), None, [stub_data],
                              num_devices=1, kernel_fn=stub_kernel, map_kinds=("cam",))
        out[kind] = {k.split("/", 1)[1]: v for k, v in res.items() if k.startswith("cam/")}
        out["top1_cls"] = res["top1_cls"]
    return out


def check_results(results, expected):
    assert results["top1_cls"] == pytest.approx(expected["top1_cls"])
    for kind in KINDS:
        got = {k.split("/", 1)[1]: v for k, v in results.items() if k.startswith(kind + "/")}
        assert got == pytest.approx(expected[kind], abs=1e-9), kind


@pytest.mark.parametrize("method", ["acol", "spg"])
def test_predict_maps_equal_the_hand_fused_maps(method):
    model, variables = make_model(method)
    data = make_data()
    settings = EvalSettings(image_size=(SIZE, SIZE), num_classes=M, region_size=R,
                            num_box_thresholds=10, map_kinds=KINDS)
    images, labels = jnp.asarray(data["image"]), jnp.asarray(data["label"])
    out = jax.jit(lambda v, x, y: forward.predict_maps(settings, model, v, x, y))(
        variables, images, labels)
    logits, maps = hand_maps(method, model, variables, images, labels)
    np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(logits), rtol=1e-5,
                               atol=1e-6)  # jit vs eager: rounding only
    for kind in KINDS:
        want = forward.stacked_scoremaps(settings, jnp.asarray(maps[kind], jnp.float32))
        np.testing.assert_allclose(np.asarray(out["scoremaps"][kind]), np.asarray(want),
                                   atol=2e-5)
    # The readout the eval step uses is that of the GT class: ACoL's branch B erases it.
    if method == "acol":
        _, ro_gt = backends.forward_readout(model, variables, images, labels)
        _, ro_other = backends.forward_readout(model, variables, images, (labels + 1) % M)
        assert not np.allclose(np.asarray(ro_gt.branches[1].features),
                               np.asarray(ro_other.branches[1].features))


def test_eval_step_on_two_devices_equals_the_hand_fused_maps():
    """ACoL and SPG through ``driver.evaluate`` on 2 simulated devices (subprocess): every
    result of every map kind equals the results of its hand-fused map read as a CAM."""
    data = make_data()
    expected = {m: stub_results(m, data) for m in ("acol", "spg")}
    results = two_devices.run_json("""
        import test_eval_methods as t
        from infocam_jax.evaluation import driver
        out = {}
        for method in ("acol", "spg"):
            model, variables = t.make_model(method)
            data = t.make_data()
            # batches of 3, 3, 2: padded to 4 and split over the 2 devices.
            batches = [{k: v[i:i + 3] for k, v in data.items()} for i in (0, 3, 6)]
            out[method] = driver.evaluate(t.make_config(), model, variables, batches,
                                          num_devices=2)
        print("RESULTS" + json.dumps(out))
    """)
    for method in ("acol", "spg"):
        check_results(results[method], expected[method])


@pytest.mark.parametrize("method", ["acol", "spg"])
def test_posthoc_and_multi_label_are_refused_by_method(method):
    model, variables = make_model(method)
    data = make_data()
    with pytest.raises(ValueError, match=f"post-hoc.*{method}"):
        driver.evaluate(make_config(), model, variables, [data], num_devices=1,
                        map_kinds=("cam", "gradcam"))
    settings = EvalSettings(image_size=(SIZE, SIZE), num_classes=M, multi_label=True,
                            map_kinds=("cam",))
    with pytest.raises(ValueError, match=f"{method}.*single-label"):
        backends.check_model_settings(settings, model)
    from infocam_jax.maps import posthoc
    with pytest.raises(ValueError, match=method):
        posthoc.compute("gradcam", model, variables, data["image"], data["label"])


def test_images_of_another_size_than_settings_are_refused():
    """The stub fed its feature-size grid as the "image" (the old test shortcut) is refused:
    the images' (H, W) must be settings.image_size, where the boxes live."""
    data = make_data(4)
    maps = np.random.default_rng(0).uniform(size=(4, 4, 4)).astype(np.float32)
    small = dict(data, image=stub_images(maps, np.zeros((4, M)))[:, :4, :4])
    with pytest.raises(ValueError, match=re.escape(
            "batch 0 of the iterator: batch['image'] (the images [B, H, W, C]) must have "
            "(H, W) = settings.image_size = (16, 16), got shape (4, 4, 4, 6)")):
        driver.evaluate(make_config(), MapStub((4, 4)), None, [small], num_devices=1,
                        kernel_fn=stub_kernel, map_kinds=("cam",))


@dataclasses.dataclass(frozen=True)
class DropStub(MapStub):
    """A stub whose features ("maps") or logits lose the last example of the batch."""
    drop: str = "features"

    def apply(self, variables, images, train=False):
        logits, features = super().apply(variables, images, train)
        if self.drop == "features":
            return logits, features[:-1]
        return logits[:-1], features


@pytest.mark.parametrize("drop, match", [
    ("features", (r"the model's branch 0 features must have shape \[B, h, w, K\] with B = 4 "
                  r"\(the images' batch, images shape \(4, 16, 16, 6\)\), got shape "
                  r"\(3, 4, 4, 1\)")),
    ("logits", r"the model's logits must have shape \[B, M\] with B = 4 .*got shape \(3, 5\)"),
])
def test_maps_of_another_batch_size_are_refused(drop, match):
    data = make_data(4)
    maps = np.random.default_rng(0).uniform(size=(4, 4, 4)).astype(np.float32)
    batch = dict(data, image=stub_images(maps, np.zeros((4, M))))
    with pytest.raises(ValueError, match=match):
        driver.evaluate(make_config(), DropStub((4, 4), drop), None, [batch], num_devices=1,
                        kernel_fn=stub_kernel, map_kinds=("cam",))
