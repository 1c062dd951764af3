"""cams.py against plain NumPy statements of the paper's equations."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from infocam_jax.evaluation import forward
from infocam_jax.evaluation.settings import CAM_FAMILY_KINDS
from infocam_jax.maps import cams

B, H, W, K, M = 3, 5, 6, 4, 7
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(B, H, W, K)).astype(np.float32)
    kernel = rng.normal(size=(K, M)).astype(np.float32)
    labels = np.array([0, 3, 6], np.int32)
    logits = rng.normal(size=(B, M)).astype(np.float32)
    return features, kernel, labels, logits


# ------------------------------------------------------------------ NumPy references
def np_class_maps(features, kernel):
    """All class maps M_m(a, b) = Σ_k W[k, m] g(a, b, k): [B, h, w, M] (float64)."""
    return np.einsum("bhwk,km->bhwm", features.astype(np.float64), kernel.astype(np.float64))


def np_region_sum(m, r, padding):
    """Direct definition: out[i, j] = Σ of m over the R x R window anchored by the padding."""
    b, h, w = m.shape
    if padding == "full":
        out_h, out_w, first = h + r - 1, w + r - 1, -(r - 1)
    else:
        out_h, out_w, first = h, w, -((r - 1) // 2)
    out = np.zeros((b, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            a0, c0 = i + first, j + first
            rows = [a for a in range(a0, a0 + r) if 0 <= a < h]
            cols = [c for c in range(c0, c0 + r) if 0 <= c < w]
            if rows and cols:
                out[:, i, j] = m[:, rows][:, :, cols].sum(axis=(1, 2))
    return out


def np_infocam(features, kernel, labels, r, padding):
    maps = np_class_maps(features, kernel)
    out = []
    for b, y in enumerate(labels):
        others = [m for m in range(kernel.shape[1]) if m != y]
        diff = maps[b][..., y] - maps[b][..., others].mean(axis=-1)
        out.append(np_region_sum(diff[None], r, padding)[0])
    return np.stack(out)


def np_infocam_plus_region(features, kernel, labels, r, padding):
    maps = np_class_maps(features, kernel)
    sums = np.stack([np_region_sum(maps[..., m], r, padding) for m in range(kernel.shape[1])],
                    axis=-1)
    out = np.zeros(sums.shape[:3])
    for b, y in enumerate(labels):
        for i in range(sums.shape[1]):
            for j in range(sums.shape[2]):
                rival = int(np.argmin(sums[b, i, j]))  # eq. 3: argmin over all classes
                out[b, i, j] = sums[b, i, j, y] - sums[b, i, j, rival]
    return out


def np_pmi(logits, priors=None):
    """PMI(x, y) = log p(y|x) / p(y); plain softmax: priors uniform."""
    logits = np.asarray(logits, np.float64)
    if priors is None:
        priors = np.full(logits.shape[-1], 1.0 / logits.shape[-1])
    post = priors * np.exp(logits) / np.sum(priors * np.exp(logits), axis=-1, keepdims=True)
    return np.log(post / priors)


# ------------------------------------------------------------------ cam / region_sum
def test_cam_matches_equation_1(data):
    features, kernel, labels, _ = data
    out = cams.cam(features, kernel, labels)
    chex.assert_shape(out, (B, H, W))
    ref = np_class_maps(features, kernel)[np.arange(B), :, :, labels]
    np.testing.assert_allclose(out, ref, **TOL)


def test_cam_sums_to_bias_free_logit(data):
    """Eq. 2: Σ_{a,b} M_y(a, b) = h·w · (GAP(g) @ W)_y."""
    features, kernel, labels, _ = data
    total = np.asarray(cams.cam(features, kernel, labels)).sum(axis=(1, 2))
    logits = features.mean(axis=(1, 2)) @ kernel
    np.testing.assert_allclose(total, H * W * logits[np.arange(B), labels], **TOL)


@pytest.mark.parametrize("padding", ["same", "full"])
@pytest.mark.parametrize("r", [1, 2, 3, 4])
def test_region_sum_matches_definition(data, r, padding):
    maps = np.asarray(np_class_maps(*data[:2])[..., 0], np.float32)
    out = cams.region_sum(maps, r, padding)
    expected_shape = (B, H, W) if padding == "same" else (B, H + r - 1, W + r - 1)
    chex.assert_shape(out, expected_shape)
    np.testing.assert_allclose(out, np_region_sum(maps, r, padding), **TOL)
    if r == 1:
        np.testing.assert_allclose(out, maps, **TOL)


@pytest.mark.parametrize("r", [2, 3, 5])
def test_region_sum_full_is_ones_convolution(r):
    """The authors' released code: conv with an R x R ones filter, padding R-1."""
    m = np.random.default_rng(1).normal(size=(2, 7, 9)).astype(np.float32)
    ref = np.stack([signal.convolve2d(x, np.ones((r, r)), mode="full") for x in m])
    np.testing.assert_allclose(cams.region_sum(m, r, "full"), ref, **TOL)
    # "same" is the window of "full" offset by R//2 (odd R: scipy's centred 'same').
    full = np.asarray(cams.region_sum(m, r, "full"))
    np.testing.assert_allclose(cams.region_sum(m, r, "same"),
                               full[:, r // 2:r // 2 + 7, r // 2:r // 2 + 9], **TOL)
    if r % 2:
        ref_same = np.stack([signal.convolve2d(x, np.ones((r, r)), mode="same") for x in m])
        np.testing.assert_allclose(cams.region_sum(m, r, "same"), ref_same, **TOL)


def test_region_sum_even_offset_known_case():
    """R = 2, "same": out[i, j] = m[i, j] + m[i, j+1] + m[i+1, j] + m[i+1, j+1]."""
    m = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    expected = np.array([[[8, 12, 7], [20, 24, 13], [13, 15, 8]]], np.float32)
    np.testing.assert_array_equal(cams.region_sum(m, 2, "same"), expected)


# ------------------------------------------------------------------ infoCAM / infoCAM+
@pytest.mark.parametrize("r,padding", [(1, "same"), (3, "same"), (2, "full")])
def test_infocam_matches_numpy(data, r, padding):
    features, kernel, labels, _ = data
    out = cams.infocam(features, kernel, labels, r, padding)
    np.testing.assert_allclose(out, np_infocam(features, kernel, labels, r, padding), **TOL)


def test_infocam_total_is_pmi_difference(data):
    """Σ over the grid of infoCAM (R=1) = PMI(x, y) - mean_{y'≠y} PMI(x, y') with n = Σ M."""
    features, kernel, labels, _ = data
    n = np_class_maps(features, kernel).sum(axis=(1, 2))
    pmi = np_pmi(n)
    for b, y in enumerate(labels):
        diff = pmi[b, y] - np.mean(np.delete(pmi[b], y))
        total = float(np.asarray(cams.infocam(features, kernel, labels, 1)[b]).sum())
        np.testing.assert_allclose(total, diff, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("padding", ["same", "full"])
def test_infocam_plus_image_rival(data, padding):
    features, kernel, labels, logits = data
    maps = np_class_maps(features, kernel)
    for given in (None, logits):
        scores = features.mean(axis=(1, 2)) @ kernel if given is None else given
        rivals = np.argmin(scores, axis=1)
        diff = maps[np.arange(B), ..., labels] - maps[np.arange(B), ..., rivals]
        out = cams.infocam_plus(features, kernel, labels, 3, padding, rival="image",
                                logits=given)
        np.testing.assert_allclose(out, np_region_sum(diff, 3, padding), **TOL)


def test_infocam_plus_uses_given_logits(data):
    """The rival comes from the logits when passed (e.g. bias included)."""
    features, kernel, labels, _ = data
    logits = np.zeros((B, M), np.float32)
    logits[:, 2] = -5.0
    out = cams.infocam_plus(features, kernel, labels, 1, logits=logits)
    maps = np_class_maps(features, kernel)
    np.testing.assert_allclose(out, maps[np.arange(B), ..., labels] - maps[..., 2], **TOL)


@pytest.mark.parametrize("r,padding", [(1, "same"), (2, "same"), (3, "full")])
def test_infocam_plus_region_rival_is_equation_3(data, r, padding):
    features, kernel, labels, _ = data
    out = cams.infocam_plus(features, kernel, labels, r, padding, rival="region")
    ref = np_infocam_plus_region(features, kernel, labels, r, padding)
    np.testing.assert_allclose(out, ref, **TOL)
    assert np.all(np.asarray(out) >= -1e-4)


@pytest.mark.parametrize("rival", ["image", "region"])
def test_all_maps_matches_individual_functions(data, rival):
    features, kernel, labels, logits = data
    out = cams.all_maps(features, kernel, labels, 3, "full", rival=rival, logits=logits)
    chex.assert_trees_all_close(out, {
        "cam": cams.cam(features, kernel, labels),
        "infocam": cams.infocam(features, kernel, labels, 3, "full"),
        "infocam_plus": cams.infocam_plus(features, kernel, labels, 3, "full", rival, logits),
    }, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_eval_step_class_maps_equal_numpy(data, r):
    """Every CAM-family kind of the eval step: "cam_region" (R on, subtraction off: Table 5's
    ablation) is the R x R sum of CAM; it equals CAM at R = 1."""
    features, kernel, labels, logits = data
    out = forward.class_maps(CAM_FAMILY_KINDS, features, kernel, labels, logits=logits,
                             region_size=r)
    cam = np_class_maps(features, kernel)[np.arange(B), ..., labels]
    rival = np.argmin(logits, axis=1)
    plus = cam - np_class_maps(features, kernel)[np.arange(B), ..., rival]
    want = {"cam": cam, "cam_region": np_region_sum(cam, r, "same"),
            "infocam": np_infocam(features, kernel, labels, r, "same"),
            "infocam_plus": np_region_sum(plus, r, "same"),
            "infocam_plus_region": np_infocam_plus_region(features, kernel, labels, r, "same")}
    assert set(out) == set(CAM_FAMILY_KINDS)
    for kind, ref in want.items():
        np.testing.assert_allclose(out[kind], ref, err_msg=kind, **TOL)
    if r == 1:
        np.testing.assert_allclose(out["cam_region"], out["cam"], **TOL)


# ------------------------------------------------------------------ multi-label
@pytest.mark.parametrize("head", ["sigmoid", "pc_sigmoid"])
def test_multilabel_infocam_is_region_summed_cam(data, head):
    features, kernel, labels, _ = data
    prior = np.linspace(0.1, 0.9, M) if head == "pc_sigmoid" else None
    out = cams.multilabel_infocam(features, kernel, labels, 3, "same", head=head, prior=prior)
    ref = cams.region_sum(cams.multilabel_cam(features, kernel, labels), 3, "same")
    np.testing.assert_allclose(out, ref, **TOL)
    np.testing.assert_allclose(cams.multilabel_cam(features, kernel, labels),
                               cams.cam(features, kernel, labels), **TOL)


@pytest.mark.parametrize("head", ["sigmoid", "pc_sigmoid"])
def test_multilabel_derivation_binary_pmi_difference(data, head):
    """PMI(present) - PMI(absent) of the binary (PC-)softmax {n_j, 0} equals Σ infoCAM (R=1)."""
    features, kernel, labels, _ = data
    maps = np_class_maps(features, kernel)
    pi = 0.2
    for b, j in enumerate(labels):
        n = maps[b, ..., j].sum() * 0.05  # scaled so exp() stays well inside float64 range
        priors = None if head == "sigmoid" else np.array([pi, 1 - pi])
        pmi = np_pmi(np.array([n, 0.0]), priors)
        np.testing.assert_allclose(pmi[0] - pmi[1], n, rtol=1e-9)
    out = cams.multilabel_infocam(features, kernel, labels, 1, head=head)
    np.testing.assert_allclose(np.asarray(out).sum(axis=(1, 2)),
                               maps[np.arange(B), ..., labels].sum(axis=(1, 2)), **TOL)


# ------------------------------------------------------------------ jit / vmap / traced labels
def test_jit_and_vmap(data):
    features, kernel, labels, logits = data
    fn = jax.jit(functools.partial(cams.all_maps, region_size=2, padding="same", rival="region"))
    out = fn(features, kernel, labels)
    eager = cams.all_maps(features, kernel, labels, 2, "same", rival="region")
    chex.assert_trees_all_close(out, eager, atol=1e-5)
    # vmap over an extra leading axis (e.g. two crops per image).
    stacked = np.stack([features, features[::-1]])
    vm = jax.vmap(lambda f, y: cams.infocam(f, kernel, y, 3), in_axes=(0, None))(stacked, labels)
    chex.assert_shape(vm, (2, B, H, W))
    np.testing.assert_allclose(vm[1], cams.infocam(features[::-1], kernel, labels, 3), **TOL)


def test_out_of_range_label_under_jit_gives_nan(data):
    features, kernel, _, _ = data
    out = jax.jit(cams.cam)(features, kernel, jnp.array([0, M, -1]))
    assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1:]))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("call,match", [
    (lambda f, k, y: cams.cam(f[0], k, y), "features"),
    (lambda f, k, y: cams.cam(f, k[None], y), "kernel"),
    (lambda f, k, y: cams.cam(f, k[:-1], y), "kernel"),
    (lambda f, k, y: cams.cam(f, k, y[:-1]), "labels"),
    (lambda f, k, y: cams.cam(f, k, y.astype(np.float32)), "labels"),
    (lambda f, k, y: cams.cam(f, k, np.array([0, 1, M])), r"labels must lie in \[0, 7\)"),
    (lambda f, k, y: cams.cam(f, k, np.array([0, -1, 2])), "labels"),
    (lambda f, k, y: cams.infocam(f, k, y, 0), "region_size"),
    (lambda f, k, y: cams.infocam(f, k, y, 2.0), "region_size"),
    (lambda f, k, y: cams.infocam(f, k, y, 3, padding="valid"), "padding"),
    (lambda f, k, y: cams.infocam(f, k[:, :1], np.zeros(B, np.int32), 3), "M >= 2"),
    (lambda f, k, y: cams.infocam_plus(f, k, y, 3, rival="pixel"), "rival"),
    (lambda f, k, y: cams.infocam_plus(f, k, y, 3, logits=np.zeros((B, M + 1))), "logits"),
    (lambda f, k, y: cams.region_sum(f, 3), "maps"),
    (lambda f, k, y: cams.region_sum(f[..., 0], -1), "region_size"),
    (lambda f, k, y: cams.multilabel_cam(f, k, y[:1]), "label_index"),
    (lambda f, k, y: cams.multilabel_infocam(f, k, y, 3, head="softmax"), "head"),
    (lambda f, k, y: cams.multilabel_infocam(f, k, y, 3, head="pc_sigmoid",
                                             prior=np.full(M, 1.0)), "prior"),
    (lambda f, k, y: cams.multilabel_infocam(f, k, y, 3, head="pc_sigmoid",
                                             prior=np.full(M - 1, 0.5)), "prior"),
])
def test_bad_input_raises(data, call, match):
    features, kernel, labels, _ = data
    with pytest.raises(ValueError, match=match):
        call(features, kernel, labels)
