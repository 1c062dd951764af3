"""Tests of the perturbation, guided and factorisation maps of infocam_jax.maps.posthoc.

* Ablation-CAM against pytorch-grad-cam's ``AblationCAM`` (its own ``__call__``, unscaled:
  ``tests/gradcam_peer.py``) and a closed form on a GAP network;
* SS-CAM and IS-CAM against torch-cam's ``SSCAM`` / ``ISCAM`` (torch-cam 0.5.0, its own
  extractor with our noise fed to its sampler) and NumPy statements of their weights;

on converted VGG16-GAP and ResNet50 (``posthoc_nets``) at a non-default layer and targets that
are not the argmax. Small inputs: these maps are K forward passes per image.
"""
import gradcam_peer
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from posthoc_harness import NUM_CLASSES, close, torch_layer

from infocam_jax import models
from infocam_jax.maps import posthoc
from infocam_jax.maps.posthoc import perturbation


# --------------------------------------------------------------------------------------------
# A small GAP network (JAX only)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    """digits_cnn (width 4, BatchNorm) on 16x16 inputs: features [2, 4, 4, 16], M = 5."""
    model = models.create("digits_cnn", 5, width=4)
    images = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    variables = jax.jit(model.init)(jax.random.key(1), images)
    rng = np.random.default_rng(2)
    variables = jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.3 * rng.standard_normal(v.shape).astype(np.float32)
        if p[-1].key in ("mean", "bias") else v, variables)
    return model, variables, images, jnp.array([1, 4])


def _target_logit(model, variables, images, targets):
    logits, _ = model.apply(variables, jnp.asarray(images))
    return np.asarray(logits)[np.arange(len(targets)), np.asarray(targets)]


@pytest.mark.parametrize("layer", ["features", "bn3_1"])
def test_ablationcam_closed_form_on_gap(small, layer):
    """Ablating channel k of the GAP features (post-ReLU: value 0), or of bn3_1 (pre-ReLU:
    min - 1e7, zero after the ReLU), removes ``W[k, c] · GAP(A)_k`` from the logit, so
    ``w_k = W[k, c] GAP(A)_k / y``."""
    model, variables, images, targets = small
    logits, features = model.apply(variables, images)
    y = np.asarray(logits)[np.arange(2), np.asarray(targets)].astype(np.float64)
    w = np.asarray(models.classifier_kernel(variables))[:, np.asarray(targets)].T
    weights = w * np.asarray(features).mean(axis=(1, 2)) / y[:, None]
    _, a, _ = posthoc.activations_and_gradients(model, variables, images, targets, layer)
    assert (np.asarray(a).min() == 0) == (layer == "features")
    expected = np.maximum(np.einsum("bhwk,bk->bhw", np.asarray(a, np.float64), weights), 0)
    out = posthoc.ablationcam(model, variables, images, targets, layer=layer, chunk_size=5)
    assert np.abs(expected).max() > 0
    close(out, expected, rtol=1e-4)


def test_ablation_values():
    a = np.zeros((3, 2, 2, 2), np.float32)
    a[0] = 1.5
    a[1, 0, 0, 1] = -2.0
    a[2, 1, 1, 0] = 3.0
    np.testing.assert_allclose(perturbation.ablation_values(jnp.asarray(a)),
                               [1.5 - 1e7, -2.0 - 1e7, 0.0])


def _up_half_pixel(a, size):
    """NumPy bilinear upsampling [B, h, w, K] -> [B, S, S, K], half-pixel centres, clamped
    (torch ``interpolate(align_corners=False)``)."""
    def matrix(out, n):
        src = np.maximum((np.arange(out) + 0.5) * n / out - 0.5, 0)
        lo = np.minimum(np.floor(src).astype(int), n - 1)
        hi = np.minimum(lo + 1, n - 1)
        m = np.zeros((out, n))
        m[np.arange(out), lo] += 1 - (src - lo)
        m[np.arange(out), hi] += src - lo
        return m
    return np.einsum("Hh,bhwk,Ww->bHWk", matrix(size, a.shape[1]), a, matrix(size, a.shape[2]))


def _sampled_statement(model, variables, images, targets, masks_of_sample, num_samples):
    """softmax_k(mean_i y(X ∘ M_ik) - y(X)) on the GAP features, ReLU'd weighted sum."""
    _, a = model.apply(variables, images)
    a = np.asarray(a, np.float64)
    lo = a.min(axis=(1, 2), keepdims=True)
    normed = (a - lo) / ((a - lo).max(axis=(1, 2), keepdims=True) + 1e-8)
    up = _up_half_pixel(normed, images.shape[1])                      # [B, S, S, K]
    b, k = a.shape[0], a.shape[-1]
    base = _target_logit(model, variables, images, targets)
    scores = np.zeros((b, k))
    for i in range(num_samples):
        m = masks_of_sample(i, up)
        masked = (np.asarray(images)[:, None] * np.moveaxis(m, -1, 1)[..., None])
        y = _target_logit(model, variables, masked.reshape((-1,) + images.shape[1:]).astype(
            np.float32), np.repeat(np.asarray(targets), k))
        scores += (y.reshape(b, k) - base[:, None]) / num_samples
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.maximum(np.einsum("bhwk,bk->bhw", a, weights), 0)


@pytest.mark.parametrize("num_samples", [1, 3])
def test_iscam_statement(small, num_samples):
    model, variables, images, targets = small
    n = num_samples
    expected = _sampled_statement(model, variables, images, targets,
                                  lambda i, up: up * (i + 1) * (i + 2) / (2 * n), n)
    close(posthoc.iscam(model, variables, images, targets, num_samples=n, chunk_size=6),
          expected, rtol=1e-4)


@pytest.mark.parametrize("std", [0.0, 0.5])
def test_sscam_statement(small, std):
    """The noise of sample i is ``perturbation.sscam_noise`` (seeded, per channel)."""
    model, variables, images, targets = small
    key = jax.random.key(3)
    k = 16
    noise = [np.asarray(perturbation.sscam_noise(key, i, jnp.arange(k), (2, 16, 16), std))
             for i in range(2)]
    expected = _sampled_statement(model, variables, images, targets,
                                  lambda i, up: up + noise[i], 2)
    close(posthoc.sscam(model, variables, images, targets, num_samples=2, std=std, key=key,
                        chunk_size=6), expected, rtol=1e-4)


def test_sscam_key_and_chunks(small):
    model, variables, images, targets = small
    run = lambda **kw: np.asarray(posthoc.sscam(model, variables, images, targets,  # noqa: E731
                                                num_samples=2, **kw))
    ref = run(key=1, chunk_size=16)
    np.testing.assert_allclose(run(key=1, chunk_size=3), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(run(key=jax.random.key(1), chunk_size=16), ref, rtol=1e-6)
    assert np.abs(run(key=2, chunk_size=16) - ref).max() > 1e-4 * np.abs(ref).max()
    jitted = posthoc.jitted("sscam", model, num_samples=2, key=1, chunk_size=5)
    np.testing.assert_allclose(jitted(variables, images, targets), ref, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Parity with pytorch-grad-cam and torch-cam (VGG16-GAP, ResNet50)
# --------------------------------------------------------------------------------------------
# 64-channel pre-ReLU layers: VGG16-GAP conv1_2 at 24x24 (24x24 maps), ResNet50 bn1 at 16x16
# (8x8). These maps are N · K forward passes of the whole network per image (K = 64), and both
# sizes run every layer of their backbone (1x1 at the last stage). The sizes keep every 3x3
# convolution off a 2x2 map, where XLA:CPU's convolution is ~25x slower than at 3x3 (VGG16-GAP
# at 16x16 has block 4 at 2x2: its whole forward pass took 6x longer than at 24x24; ResNet50
# at 20-32 has layer3 at 2x2).
PARITY_NETS = [("vgg16_gap", "conv1_2"), ("resnet50", "bn1")]
PARITY_SIZES = {"vgg16_gap": 24, "resnet50": 16}


def _inputs(nets, arch, seed=0, batch=2, size=32):
    """Images, torch NCHW copy and targets that are not the argmax of our logits."""
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    model, variables, _ = nets[arch]
    images = np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype(
        np.float32)
    logits, _ = model.apply(variables, images)
    targets = (np.asarray(logits).argmax(-1) + 2) % NUM_CLASSES
    return images, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), targets


@pytest.mark.parametrize("arch, layer", PARITY_NETS)
def test_ablationcam_parity_with_peer(grad_cam, posthoc_nets, arch, layer):
    model, variables, net = posthoc_nets[arch]
    images, x, targets = _inputs(posthoc_nets, arch, size=PARITY_SIZES[arch])
    ours = posthoc.ablationcam(model, variables, images, jnp.asarray(targets), layer=layer,
                               chunk_size=24)
    peer = gradcam_peer.raw_maps(grad_cam, "ablationcam", net, torch_layer(net, layer), x,
                                 targets, batch_size=24)
    assert np.abs(peer).max() > 0
    close(ours, peer, rtol=5e-4)


def _torchcam_maps(extractor_cls, net, layer, x, targets, noise=None, **kwargs):
    """torch-cam's maps (unnormalised, after its ReLU) ``[B, h, w]``; ``noise`` (a list of
    ``[B, K, H, W]`` tensors) replaces its sampler's draws, one per sample, in order."""
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip
    extractor = extractor_cls(net, target_layer=torch_layer(net, layer),
                              input_shape=tuple(x.shape[1:]), **kwargs)
    try:
        if noise is not None:
            draws = iter(noise)
            extractor._distrib.sample = lambda size: next(draws)  # pylint: disable=protected-access
        with torch.no_grad():
            net(x)
        (cam,) = extractor(class_idx=[int(t) for t in targets], normalized=False)
    finally:
        extractor.remove_hooks()
    return cam.numpy()


@pytest.mark.parametrize("arch, layer", PARITY_NETS)
def test_iscam_parity_with_torchcam(posthoc_nets, arch, layer):
    methods = pytest.importorskip("torchcam.methods", reason="torch-cam is not installed "
                                  "(pip install --no-deps torchcam): IS-CAM parity skipped")
    model, variables, net = posthoc_nets[arch]
    images, x, targets = _inputs(posthoc_nets, arch, seed=1, size=PARITY_SIZES[arch])
    ours = posthoc.iscam(model, variables, images, jnp.asarray(targets), layer=layer,
                         num_samples=2, chunk_size=24)
    peer = _torchcam_maps(methods.ISCAM, net, layer, x, targets, batch_size=24, num_samples=2)
    assert np.abs(peer).max() > 0
    close(ours, peer, rtol=5e-4)


@pytest.mark.parametrize("arch, layer", PARITY_NETS)
def test_sscam_parity_with_torchcam(posthoc_nets, arch, layer):
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    methods = pytest.importorskip("torchcam.methods", reason="torch-cam is not installed "
                                  "(pip install --no-deps torchcam): SS-CAM parity skipped")
    model, variables, net = posthoc_nets[arch]
    images, x, targets = _inputs(posthoc_nets, arch, seed=2, size=PARITY_SIZES[arch])
    key, std = jax.random.key(5), 0.3
    ours = posthoc.sscam(model, variables, images, jnp.asarray(targets), layer=layer,
                         num_samples=2, std=std, key=key, chunk_size=24)
    k = 64  # channels of conv1_2 and bn1
    shape = (2, PARITY_SIZES[arch], PARITY_SIZES[arch])
    noise = [torch.from_numpy(np.moveaxis(np.asarray(perturbation.sscam_noise(
        key, i, jnp.arange(k), shape, std)), -1, 1).copy()) for i in range(2)]
    peer = _torchcam_maps(methods.SSCAM, net, layer, x, targets, noise=noise, batch_size=24,
                          num_samples=2, std=std)
    assert np.abs(peer).max() > 0
    close(ours, peer, rtol=5e-4)


# --------------------------------------------------------------------------------------------
# aug_smooth (every map, through registry.compute)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gradcam", "ablationcam", "eigencam"])
def test_aug_smooth_is_the_mean_of_the_views(small, method):
    """NumPy statement: six separate calls, flipped back, averaged; jit gives the same."""
    model, variables, images, targets = small
    maps = []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            x = np.asarray(images)[:, :, ::-1] if flip else np.asarray(images)
            m = np.asarray(posthoc.compute(method, model, variables, factor * x, targets))
            maps.append(m[:, :, ::-1] if flip else m)
    expected = np.mean(maps, axis=0)
    out = posthoc.compute(method, model, variables, images, targets, aug_smooth=True)
    close(out, expected, rtol=1e-5)
    assert np.abs(expected - maps[1]).max() > 1e-3 * np.abs(expected).max()  # flips matter
    close(posthoc.jitted(method, model, aug_smooth=True)(variables, images, targets),
          expected, rtol=1e-5)


@pytest.mark.parametrize("arch, method, layer, size", [
    ("vgg16_gap", "gradcam", "conv5_3", 32), ("resnet50", "layercam", "layer3_5", 40)])
def test_aug_smooth_parity_with_peer(grad_cam, posthoc_nets, arch, method, layer, size):
    """pytorch-grad-cam's ``aug_smooth=True`` (its ttach views), scaling replaced by the
    identity. VGG16-GAP at 32x32 and ResNet50 at 40x40: 2x2 maps at conv5_3 and 3x3 at
    layer3_5, so the flipped views differ from the plain ones and must be flipped back (the
    mean of the six views is per position whatever the map size). ResNet50 at 32x32 would put
    every 3x3 convolution of layer3 on a 2x2 map, XLA:CPU's slow case (see PARITY_NETS)."""
    model, variables, net = posthoc_nets[arch]
    images, x, targets = _inputs(posthoc_nets, arch, seed=3, size=size)
    ours = posthoc.compute(method, model, variables, images, jnp.asarray(targets), layer=layer,
                           aug_smooth=True)
    peer = gradcam_peer.raw_maps(grad_cam, method, net, torch_layer(net, layer), x, targets,
                                 aug_smooth=True)
    assert np.abs(peer).max() > 0
    close(ours, peer)


# --------------------------------------------------------------------------------------------
# Deep Feature Factorization: NMF against scikit-learn, concept maps against the peer
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, rank, seed", [((20, 30), 4, 0), ((7, 40), 3, 1),
                                               ((16, 9), 5, 2)])
def test_nmf_equals_sklearn(shape, rank, seed):
    nmf_lib = pytest.importorskip("sklearn.decomposition._nmf",
                                  reason="scikit-learn is not installed: NMF parity skipped")
    rng = np.random.default_rng(seed)
    x = (np.abs(rng.standard_normal(shape)) * (rng.random(shape) > 0.3)).astype(np.float32)
    w0, h0 = nmf_lib._initialize_nmf(x, rank, init="random", random_state=seed)
    ref = nmf_lib.NMF(rank, init="custom", solver="cd", max_iter=200, tol=1e-4)
    w_ref = ref.fit_transform(x, W=w0.copy(), H=h0.copy())
    w, h, n_iter = posthoc.factorization.nmf(x, w0, h0)
    assert int(n_iter) == ref.n_iter_
    close(w, w_ref, rtol=1e-4)
    close(h, ref.components_, rtol=1e-4)


def test_dff_random_init_and_errors(small):
    model, variables, images, _ = small
    concepts, maps = posthoc.deep_feature_factorization(model, variables, images,
                                                        n_components=3, key=1)
    assert concepts.shape == (16, 3) and maps.shape == (2, 3, 4, 4)
    assert np.all(np.asarray(maps) >= 0) and np.asarray(maps).max() > 0
    again = posthoc.deep_feature_factorization(model, variables, images, n_components=3,
                                               key=jax.random.key(1))
    np.testing.assert_array_equal(again[1], maps)
    with pytest.raises(ValueError, match="init must be"):
        posthoc.deep_feature_factorization(model, variables, images, n_components=3,
                                           init=(np.ones((16, 3)), np.ones((3, 5))))


@pytest.mark.parametrize("arch, layer, size", [("vgg16_gap", "conv5_3", 64),
                                               ("resnet50", "layer3_5", 64)])
def test_dff_parity_with_peer(grad_cam, posthoc_nets, arch, layer, size):
    """The peer's ``dff`` (its NMF with ``init="random", random_state=0``) on the twin's
    activations; ours from the same initial factors (scikit-learn's random init)."""
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    nmf_lib = pytest.importorskip("sklearn.decomposition._nmf")
    dff = pytest.importorskip("pytorch_grad_cam.feature_factorization."
                              "deep_feature_factorization")
    del grad_cam  # imported the peer with its torchvision stand-in
    model, variables, net = posthoc_nets[arch]
    images, x, _ = _inputs(posthoc_nets, arch, seed=4, size=size)
    store = {}
    handle = torch_layer(net, layer).register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    peer_concepts, peer_maps = dff.dff(store["a"].numpy().copy(), n_components=4)
    _, a, _ = posthoc.activations_and_gradients(model, variables, images, jnp.zeros(2, int),
                                                layer)
    matrix, _ = posthoc.factorization.dff_matrix(a)
    init = nmf_lib._initialize_nmf(np.asarray(matrix), 4, init="random", random_state=0)
    concepts, maps = posthoc.deep_feature_factorization(model, variables, images, layer=layer,
                                                        n_components=4, init=init)
    assert np.abs(peer_maps).max() > 0
    close(maps, peer_maps, rtol=2e-3)
    close(concepts, peer_concepts, rtol=2e-3)


# --------------------------------------------------------------------------------------------
# Guided backpropagation and Guided Grad-CAM ([B, H, W, C], not map kinds)
# --------------------------------------------------------------------------------------------
def test_guided_relu_rule():
    x = jnp.array([-1.0, 2.0, 3.0, 0.0])
    out, pullback = jax.vjp(posthoc.guided.guided_relu, x)
    np.testing.assert_array_equal(out, [0.0, 2.0, 3.0, 0.0])
    np.testing.assert_array_equal(pullback(jnp.array([5.0, -4.0, 6.0, 7.0]))[0],
                                  [0.0, 0.0, 6.0, 0.0])


def test_guided_gradcam_statement_and_registry(small):
    model, variables, images, targets = small
    gb = np.asarray(posthoc.guided_backprop(model, variables, images, targets))
    assert gb.shape == images.shape and np.abs(gb).max() > 0
    cam = np.asarray(posthoc.gradcam(model, variables, images, targets, layer="conv2_2"))
    expected = gb * _up_half_pixel(cam[..., None], 16)
    close(posthoc.guided_gradcam(model, variables, images, targets, layer="conv2_2"),
          expected, rtol=1e-5)
    assert posthoc.IMAGE_METHODS == ("guided_backprop", "guided_gradcam")
    assert not set(posthoc.IMAGE_METHODS) & set(posthoc.METHOD_NAMES)
    close(posthoc.jitted("guided_backprop", model)(variables, images, targets), gb, rtol=1e-6)
    # guided, so not the plain input gradient
    plain = jax.grad(lambda x: jnp.sum(model.apply(variables, x)[0][jnp.arange(2), targets]))(
        images)
    assert np.abs(np.asarray(plain) - gb).max() > 1e-3 * np.abs(gb).max()


@pytest.mark.parametrize("method", ["guided_backprop", "guided_gradcam"])
def test_guided_default_and_callable_targets(small, method):
    """``targets=None`` is the predicted class; a callable of the logits is differentiated."""
    model, variables, images, _ = small
    predicted = jnp.argmax(model.apply(variables, images)[0], axis=-1)
    close(posthoc.compute(method, model, variables, images),
          posthoc.compute(method, model, variables, images, predicted), rtol=1e-6)
    # Guided Grad-CAM multiplies two maps that each scale with the score: 2 · 2.
    scale = 2.0 if method == "guided_backprop" else 4.0
    close(posthoc.compute(method, model, variables, images, lambda z: 2.0 * z[1]),
          scale * posthoc.compute(method, model, variables, images, jnp.ones(2, jnp.int32)),
          rtol=1e-5)


@pytest.mark.parametrize("arch", ["vgg16_gap", "resnet50"])
def test_guided_backprop_parity_with_peer(grad_cam, posthoc_nets, arch, monkeypatch):
    """pytorch-grad-cam's ``GuidedBackpropReLUModel`` (one image per call, as it takes image
    0); the twins' functional ``torch.relu`` calls get its ``GuidedBackpropReLU`` too."""
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    guided_lib = pytest.importorskip("pytorch_grad_cam.guided_backprop")
    del grad_cam
    model, variables, net = posthoc_nets[arch]
    # PARITY_SIZES: the input gradient passes every guided ReLU of both backbones at any input
    # size; the peer runs the whole network once per image.
    images, x, targets = _inputs(posthoc_nets, arch, seed=5, size=PARITY_SIZES[arch])
    ours = posthoc.guided_backprop(model, variables, images, jnp.asarray(targets))
    monkeypatch.setattr(torch, "relu", guided_lib.GuidedBackpropReLU.apply)
    peer = np.stack([guided_lib.GuidedBackpropReLUModel(net, device="cpu")(
        x[b:b + 1].clone(), target_category=int(targets[b])) for b in range(len(targets))])
    assert np.abs(peer).max() > 0
    close(ours, peer, rtol=5e-4)
