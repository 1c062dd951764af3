"""Tests of infocam_jax.maps.posthoc: relations to CAM, bad input, and parity with the peer.

Parity: on the same converted weights (torchvision-format state dicts of tests/test_convert.py
loaded into its PyTorch twins and, through ``convert.convert_state_dict``, into our models),
every method's map equals

* a PyTorch-autograd statement of the method's formula written here (``test_parity``,
  ``test_scorecam_parity``), and
* pytorch-grad-cam's (``tests/gradcam_peer.py``: its own ``__call__`` with the scaling and
  resizing replaced by the identity; ``test_parity_with_peer``, ``test_scorecam_parity_with_peer``).

The torch tests skip, with the reason, when torch is absent; the peer tests (the ``grad_cam``
fixture of ``conftest.py``) when torch or pytorch-grad-cam is absent. On CI both must run.
"""
import chex
import gradcam_peer
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from posthoc_harness import NUM_CLASSES, close, torch_layer

from infocam_jax import models
from infocam_jax.maps import cams, posthoc

# The gradient maps whose formulas _torch_statement writes (the others: test_posthoc_gradient_zoo).
GRADIENT = ("gradcam", "hirescam", "gradcampp", "xgradcam", "layercam")


# --------------------------------------------------------------------------------------------
# A small GAP network (JAX only)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """digits_cnn (width 4, BatchNorm) on 24x32 inputs: features [3, 6, 8, 16], M = 5."""
    model = models.create("digits_cnn", 5, width=4)
    images = jax.random.normal(jax.random.key(0), (3, 24, 32, 1))
    variables = jax.jit(model.init)(jax.random.key(1), images)
    # Non-trivial BatchNorm statistics and head bias.
    rng = np.random.default_rng(2)
    variables = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.3 * rng.standard_normal(v.shape).astype(np.float32)
        if p[-1].key in ("mean", "bias") else v, variables)
    targets = jnp.array([0, 3, 4])
    logits, features = model.apply(variables, images)
    return model, variables, images, targets, logits, features


def _cam_terms(small):
    model, variables, images, targets, _, features = small
    kernel = models.classifier_kernel(variables)
    z = features.shape[1] * features.shape[2]
    return features, kernel, cams.cam(features, kernel, targets), z


def _small_options(name):
    """Few forward passes for the perturbation maps."""
    return posthoc.registry.applicable_options(name, {"chunk_size": 5, "num_samples": 2})


@pytest.fixture(scope="module")
def jit_maps(small):
    """{method: (maps for the targets, maps with targets [0, 5, 1])} from one jit per method."""
    model, variables, images, targets, _, _ = small
    out = {}
    for name in posthoc.METHOD_NAMES:
        fn = posthoc.jitted(name, model, **_small_options(name))
        out[name] = (np.asarray(fn(variables, images, targets)),
                     np.asarray(fn(variables, images, jnp.array([0, 5, 1]))))
    return out


def test_shapes_registry_and_jit(small, jit_maps):
    """Every registered method under ``jit`` (one compile each, ``jit_maps``): shape, dtype,
    finite, non-negative, not all zero. That ``jit`` gives the eager maps is checked once per
    method in tests/test_posthoc_api.py (``test_default_target_is_the_predicted_class``: the
    eager map for the predicted classes against the jitted map with the default target), so
    the eager maps are not recomputed here."""
    model, variables, images, targets, _, features = small
    assert posthoc.METHOD_NAMES == (
        "gradcam", "hirescam", "gradcampp", "xgradcam", "layercam", "gradcamew", "eigengradcam",
        "segeigencam", "finercam", "smoothgradcampp", "scorecam", "sscam", "iscam", "ablationcam",
        "eigencam", "kpcacam", "fem", "randomcam", "shapleycam", "fullgrad")
    for name in posthoc.METHOD_NAMES:
        out = jit_maps[name][0]
        # FullGrad sums maps of every layer at the input resolution.
        chex.assert_shape(out, images.shape[:3] if name == "fullgrad" else features.shape[:3])
        assert out.dtype == np.float32, name
        assert np.all(np.isfinite(out)) and np.all(out >= 0), name
        assert out.max() > 0, name
    chex.assert_shape(posthoc.gradcam(model, variables, images, targets, layer="conv2_2"),
                      (3, 12, 16))


def test_out_of_range_target_under_jit_is_nan(jit_maps):
    for name, (good, bad) in jit_maps.items():
        assert np.all(np.isnan(bad[1])), name
        assert np.all(np.isfinite(bad[[0, 2]])), name
        np.testing.assert_allclose(bad[0], good[0], rtol=1e-6, atol=1e-7)  # same target 0


def test_gradcam_and_hirescam_are_cam_over_hw(small):
    """On the GAP features: Grad-CAM = HiResCAM = ReLU(CAM)/(h w); without ReLU, CAM/(h w)."""
    model, variables, images, targets, logits, _ = small
    features, kernel, cam, z = _cam_terms(small)
    assert np.asarray(cam).min() < 0 < np.asarray(cam).max()  # the ReLU matters here
    for fn in (posthoc.gradcam, posthoc.hirescam):
        close(fn(model, variables, images, targets, relu=False), cam / z, rtol=1e-5)
        close(fn(model, variables, images, targets), np.maximum(cam, 0) / z, rtol=1e-5)
    # HiResCAM before the ReLU sums to the target logit minus the bias.
    raw = posthoc.hirescam(model, variables, images, targets, relu=False)
    bias = variables["params"]["head"]["bias"][targets]
    close(jnp.sum(raw, axis=(1, 2)), logits[jnp.arange(3), targets] - bias, rtol=1e-5)


def test_xgradcam_layercam_gradcampp_on_gap(small):
    model, variables, images, targets, _, _ = small
    features, kernel, cam, z = _cam_terms(small)
    w = kernel[:, targets].T                                              # [B, K]
    s = jnp.sum(features, axis=(1, 2))                                    # S_k
    xgrad = jnp.einsum("bhwk,bk->bhw", features, w * s / (s + posthoc.gradient.XGRADCAM_EPS)) / z
    close(posthoc.xgradcam(model, variables, images, targets), np.maximum(xgrad, 0), 1e-5)
    close(posthoc.xgradcam(model, variables, images, targets), np.maximum(cam, 0) / z, 1e-4)
    layer = jnp.einsum("bhwk,bk->bhw", features, np.maximum(w, 0)) / z
    close(posthoc.layercam(model, variables, images, targets), layer, 1e-5)
    # Grad-CAM++ with g = W/Z at every position: w_k = [g]_+ Z g^2 / (2 g^2 + S g^3 + eps) ...
    g = w / z
    wpp = np.maximum(g, 0) * z * g ** 2 / (2 * g ** 2 + s * g ** 3 + posthoc.gradient.GRADCAMPP_EPS)
    close(posthoc.gradcampp(model, variables, images, targets),
           np.maximum(jnp.einsum("bhwk,bk->bhw", features, wpp), 0), 1e-5)
    # ... -> [W]_+ / (2 + W GAP(A)_k) once g^2 >> eps (head weights scaled up 100x).
    big = jax.tree_util.tree_map(lambda v: v, variables)
    big["params"]["head"]["kernel"] = 100 * variables["params"]["head"]["kernel"]
    w = 100 * w
    wpp = np.maximum(w, 0) / (2 + w * s / z)
    close(posthoc.gradcampp(model, big, images, targets),
           np.maximum(jnp.einsum("bhwk,bk->bhw", features, wpp), 0), 1e-3)


def test_eigencam_is_class_agnostic_with_fixed_sign(small):
    model, variables, images, targets, _, features = small
    a = posthoc.eigencam(model, variables, images, targets, relu=False)
    b = posthoc.eigencam(model, variables, images, (targets + 1) % 5, relu=False)
    np.testing.assert_array_equal(a, b)
    x = np.asarray(features, np.float64).reshape(3, -1, features.shape[-1])
    x = x - x.mean(axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = np.einsum("bnk,bk->bn", x, vt[:, 0])
    proj *= np.where(np.sum(proj * x.sum(-1), axis=-1) < 0, -1, 1)[:, None]
    close(a, proj.reshape(a.shape), 1e-3)
    close(posthoc.eigencam(model, variables, images, targets), np.maximum(a, 0), 1e-6)


def test_scorecam_zero_activation_gives_zero_map(small):
    """All-zero features: masks 0/(0 + 1e-8) = 0, equal scores, uniform weights, zero map."""
    model, variables, images, targets, _, _ = small
    dead = jax.tree_util.tree_map(lambda v: v, variables)
    dead["params"]["bn3_1"]["bias"] = jnp.full_like(dead["params"]["bn3_1"]["bias"], -100.0)
    dead["params"]["bn3_1"]["scale"] = jnp.zeros_like(dead["params"]["bn3_1"]["scale"])
    _, features = model.apply(dead, images)
    assert not np.any(features)
    for relu in (True, False):
        out = posthoc.scorecam(model, dead, images, targets, relu=relu, chunk_size=3)
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(out, 0.0)


def test_posthoc_chunk_size_does_not_change_the_map(small):
    model, variables, images, targets, _, _ = small
    ref = posthoc.scorecam(model, variables, images, targets, chunk_size=16)
    for chunk in (1, 5, 100):
        close(posthoc.scorecam(model, variables, images, targets, chunk_size=chunk), ref, 1e-5)


def test_layer_paths_and_submodule_layers(small):
    model, variables, images, targets, _, _ = small
    paths = posthoc.layer_paths(model, variables, images)
    assert paths[0] == "features" and "conv3_1" in paths and "bn3_1" in paths
    assert "head" not in paths  # the head returns [B, M]
    # features = relu(bn3_1 output): at "bn3_1" the activations are pre-ReLU.
    _, a_bn, _ = posthoc.activations_and_gradients(model, variables, images, targets, "bn3_1")
    _, a_f, g_f = posthoc.activations_and_gradients(model, variables, images, targets)
    np.testing.assert_allclose(np.maximum(a_bn, 0), a_f, rtol=1e-6, atol=1e-6)
    z = a_f.shape[1] * a_f.shape[2]
    kernel = models.classifier_kernel(variables)
    np.testing.assert_allclose(g_f, jnp.broadcast_to(kernel[:, targets].T[:, None, None] / z,
                                                     g_f.shape), rtol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda m, v, x, t: posthoc.compute("gradcam2", m, v, x, t), "method"),
    (lambda m, v, x, t: posthoc.gradcam(m, v, x, t, layer="conv9_9"), "layer"),
    (lambda m, v, x, t: posthoc.scorecam(m, v, x, t, layer="head/kernel"), "layer"),
    (lambda m, v, x, t: posthoc.gradcam(m, v, x, t, layer="head"), "layer"),
    (lambda m, v, x, t: posthoc.eigencam(m, v, x, t, layer=""), "layer"),
    (lambda m, v, x, t: posthoc.gradcam(m, v, x, t.at[0].set(5)), r"targets must lie in \[0, 5\)"),
    (lambda m, v, x, t: posthoc.layercam(m, v, x, t.at[1].set(-1)), "targets"),
    (lambda m, v, x, t: posthoc.eigencam(m, v, x, t[:2]), "targets"),
    (lambda m, v, x, t: posthoc.scorecam(m, v, x, t, chunk_size=0), "chunk_size"),
    (lambda m, v, x, t: posthoc.scorecam(m, v, x, t, chunk_size=2.0), "chunk_size"),
    (lambda m, v, x, t: posthoc.compute("gradcam", m, v, x, t, chunk_size=4), "chunk_size"),
    (lambda m, v, x, t: posthoc.gradcam(m, v, x[0], t), "images"),
    (lambda m, v, x, t: posthoc.jitted("nope", m), "method"),
])
def test_bad_input(small, call, match):
    model, variables, images, targets, _, _ = small
    with pytest.raises(ValueError, match=match):
        call(model, variables, images, targets)


def test_unknown_layer_lists_valid_paths(small):
    model, variables, images, targets, _, _ = small
    with pytest.raises(ValueError, match="valid layers: features, conv1_1, bn1_1"):
        posthoc.hirescam(model, variables, images, targets, layer="bn9")


# --------------------------------------------------------------------------------------------
# Parity with pytorch-grad-cam and with PyTorch-autograd statements (VGG16-GAP, ResNet50)
# --------------------------------------------------------------------------------------------
def test_peer_imports(grad_cam):
    """The peer and every class the parity tests call (the skip reason says why not)."""
    for name in gradcam_peer.PEER_CLASSES.values():
        assert callable(getattr(grad_cam, name)), name


@pytest.mark.parametrize("ci", ["true", ""])
def test_ci_fails_without_the_peers(ci):
    """conftest's ``peers_on_ci``: with torch blocked, CI=true fails the run with the reason;
    elsewhere the peer test skips with it."""
    import os  # pylint: disable=import-outside-toplevel
    import pathlib  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    repo = pathlib.Path(__file__).resolve().parents[1]
    code = ("import sys; sys.modules['torch'] = None; import pytest; sys.exit(pytest.main("
            "['-q', '-rs', '-p', 'no:cacheprovider', '-p', 'no:xdist', "
            "'tests/test_posthoc.py::test_peer_imports']))")
    env = dict(os.environ, CI=ci, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode != 0, out[-3000:]
        assert "CI=true but a PyTorch peer is missing (torch is not installed)" in out, out[-3000:]
    else:
        assert proc.returncode == 0, out[-3000:]
        assert "SKIPPED" in out and "torch is not installed" in out, out[-3000:]


def test_ci_fails_without_torchcam():
    """conftest's ``peers_on_ci``: with torch-cam blocked, CI=true fails the run, naming it."""
    import os  # pylint: disable=import-outside-toplevel
    import pathlib  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    pytest.importorskip("torch", reason="torch is not installed: the CI peer check needs it")
    repo = pathlib.Path(__file__).resolve().parents[1]
    code = ("import sys; sys.modules['torchcam'] = None; import pytest; sys.exit(pytest.main("
            "['-q', '-p', 'no:cacheprovider', '-p', 'no:xdist', "
            "'tests/test_posthoc.py::test_peer_imports']))")
    env = dict(os.environ, CI="true", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "CI=true but torch-cam does not import (torchcam.methods" in out, out[-3000:]


@pytest.fixture(scope="module")
def nets(posthoc_nets):
    """{arch: (our model, our variables, torch wrapper)} (conftest ``posthoc_nets``)."""
    return posthoc_nets


def _torch_statement(method, net, layer, x, targets, chunk=16):
    """The method's formula in PyTorch autograd, [B, h, w] after the ReLU (NumPy)."""
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    store = {}
    handle = torch_layer(net, layer).register_forward_hook(
        lambda m, i, o: store.setdefault("a", o))
    try:
        logits = net(x)
    finally:
        handle.remove()
    a = store["a"]
    idx = torch.as_tensor(targets)
    if method in GRADIENT:
        (g,) = torch.autograd.grad(logits[torch.arange(len(idx)), idx].sum(), a)
        a, g = a.detach().double(), g.double()
        s = a.sum(dim=(2, 3), keepdim=True)
        if method == "gradcam":
            cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1)
        elif method == "hirescam":
            cam = (g * a).sum(1)
        elif method == "gradcampp":
            alpha = g ** 2 / (2 * g ** 2 + s * g ** 3 + 1e-6)
            alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
            cam = ((torch.relu(g) * alpha).sum(dim=(2, 3), keepdim=True) * a).sum(1)
        elif method == "xgradcam":
            cam = ((g * a / (s + 1e-7)).sum(dim=(2, 3), keepdim=True) * a).sum(1)
        else:  # layercam
            cam = (torch.relu(g) * a).sum(1)
        return torch.relu(cam).numpy()
    a = a.detach()
    if method == "scorecam":
        with torch.no_grad():
            up = torch.nn.functional.interpolate(a, size=x.shape[-2:], mode="bilinear",
                                                 align_corners=True)
            lo = up.amin(dim=(2, 3), keepdim=True)
            hi = up.amax(dim=(2, 3), keepdim=True)
            masks = (up - lo) / (hi - lo + 1e-8)
            scores = []
            for b in range(x.shape[0]):
                masked = x[b][None] * masks[b][:, None]                 # [K, C, H, W]
                scores.append(torch.cat([net(masked[i:i + chunk])[:, targets[b]]
                                         for i in range(0, masked.shape[0], chunk)]))
            weights = torch.softmax(torch.stack(scores), dim=-1)
            return torch.relu((weights[:, :, None, None] * a).sum(1)).numpy()
    # eigencam: first principal component projection, pre-ReLU (sign is the caller's business)
    b, k = a.shape[:2]
    xm = a.double().reshape(b, k, -1).transpose(1, 2)
    xm = xm - xm.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(xm, full_matrices=False)
    return (xm @ vh[:, 0, :, None])[..., 0].reshape(b, *a.shape[2:]).numpy()


_CASES = {}  # (arch, method, layer, size, batch, seed, options) -> computed maps (per process)


def _case(nets, arch, method, layer, size, batch=2, seed=0, **options):
    """Our maps and the autograd statement of one case, computed once per process (the
    statement test and the peer test share them): ``(x, targets, chunk, ours, statement)``."""
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    key = (arch, method, layer, size, batch, seed, tuple(sorted(options.items())))
    if key not in _CASES:
        model, variables, net = nets[arch]
        rng = np.random.default_rng(seed)
        images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
        targets = rng.integers(0, NUM_CLASSES, batch)
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        ours = np.asarray(posthoc.compute(method, model, variables, images,
                                          jnp.asarray(targets), layer=layer, **options))
        chunk = options.get("chunk_size", 16)
        statement = _torch_statement(method, net, layer, x, targets, chunk)
        raw = None
        if method == "eigencam":
            raw = np.asarray(posthoc.eigencam(model, variables, images, jnp.asarray(targets),
                                              layer=layer, relu=False))
        _CASES[key] = (x, targets, chunk, ours, statement, raw)
    return _CASES[key]


def _check_method(nets, arch, method, layer, size, batch=2, seed=0, **options):
    """Ours against the PyTorch-autograd statement."""
    _, _, _, ours, statement, raw = _case(nets, arch, method, layer, size, batch, seed,
                                          **options)
    if method == "eigencam":  # compare the projection, up to the singular vector's sign
        sign = np.sign(np.sum(raw * statement, axis=(1, 2)))[:, None, None]
        close(raw, sign * statement, rtol=1e-3)
        close(ours, np.maximum(sign * statement, 0), rtol=1e-3)
    else:
        assert np.abs(statement).max() > 0
        close(ours, statement)
    return ours


def _check_peer(grad_cam, nets, arch, method, layer, size, batch=2, seed=0, **options):
    """Ours against pytorch-grad-cam's maps (its own ``__call__``, unscaled)."""
    x, targets, chunk, ours, statement, _ = _case(nets, arch, method, layer, size, batch, seed,
                                                  **options)
    net = nets[arch][2]
    peer = gradcam_peer.raw_maps(grad_cam, method, net, torch_layer(net, layer), x, targets,
                                 batch_size=chunk)
    if method == "eigencam":
        # peer = ReLU(± projection): equal to ours where both signs agree, else to the
        # other half-wave; the pre-ReLU projection is compared with ours in test_parity.
        sign = np.where(np.sum(np.maximum(statement, 0) * peer, axis=(1, 2)) >=
                        np.sum(np.maximum(-statement, 0) * peer, axis=(1, 2)), 1, -1)
        close(peer, np.maximum(sign[:, None, None] * statement, 0), rtol=1e-3)
    else:
        assert np.abs(peer).max() > 0
        close(ours, peer)



# VGG16-GAP runs at 32x32 (2x2 maps at "features", conv5_3 and conv6: the maps still vary over
# positions and the formulas run unchanged); ResNet50 needs 64x64 for more than one position
# at "features".
PARITY_CASES = (
    [("vgg16_gap", m, "features", 32) for m in GRADIENT + ("eigencam",)]
    + [("resnet50", m, "features", 64) for m in GRADIENT + ("eigencam",)]
    + [("vgg16_gap", m, "conv5_3", 32) for m in ("gradcam", "gradcampp", "eigencam")]
    + [("vgg16_gap", "hirescam", "conv6", 32)]
    + [("resnet50", m, "layer3_5", 64) for m in ("gradcam", "layercam", "xgradcam")]
    + [("resnet50", "hirescam", "layer4_2/bn3", 64)])


@pytest.mark.parametrize("arch, method, layer, size", PARITY_CASES)
def test_parity(nets, arch, method, layer, size):
    _check_method(nets, arch, method, layer, size)


@pytest.mark.parametrize("arch, method, layer, size", PARITY_CASES)
def test_parity_with_peer(grad_cam, nets, arch, method, layer, size):
    _check_peer(grad_cam, nets, arch, method, layer, size)


# 16x16: bn1 at 8x8. At 20-32 every 3x3 convolution of layer3 runs on a 2x2 map, XLA:CPU's
# ~25x slow case (tests/test_posthoc_perturbation_zoo.py, PARITY_NETS): 128 forward passes.
SCORECAM_CASES = [("resnet50", "bn1", 16, 24)]


@pytest.mark.parametrize("arch, layer, size, chunk", SCORECAM_CASES)
def test_scorecam_parity(nets, arch, layer, size, chunk):
    """Score-CAM on a 64-channel layer (one forward pass per channel), chunks of 24 (padded).

    One backbone: Score-CAM only runs the network forward on masked images, the same code path
    for VGG16-GAP and ResNet50 (ResNet50's bn1 also has negative, pre-ReLU activations).
    """
    _check_method(nets, arch, "scorecam", layer, size, batch=2, chunk_size=chunk)


@pytest.mark.parametrize("arch, layer, size, chunk", SCORECAM_CASES)
def test_scorecam_parity_with_peer(grad_cam, nets, arch, layer, size, chunk):
    _check_peer(grad_cam, nets, arch, "scorecam", layer, size, batch=2, chunk_size=chunk)


def test_default_layer_is_the_gap_input(nets):
    """ResNet50's "features" are its last block's output: both paths give the same maps."""
    model, variables, _ = nets["resnet50"]
    images = np.random.default_rng(7).standard_normal((2, 64, 64, 3)).astype(np.float32)
    targets = jnp.array([2, 5])
    for method in ("gradcam", "hirescam"):
        close(posthoc.compute(method, model, variables, images, targets, layer="layer4_2"),
               posthoc.compute(method, model, variables, images, targets), rtol=1e-5)
