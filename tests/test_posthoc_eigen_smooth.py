"""``eigen_smooth`` of the perturbation maps (Score-CAM, Ablation-CAM) and of FullGrad against
pytorch-grad-cam 1.5.7 on the networks carrying the same converted weights (``posthoc_nets``),
for targets that are not the argmax: the perturbation maps on ResNet50's 64-channel ``bn1``
(one forward pass per channel; the option acts on the weighted activations, after the
method's own weights, which the plain parity tests cover on both backbones), FullGrad on
VGG16-GAP (every term of its eigen path; BatchNorm folding is the plain parity's).

The peer's first principal component has LAPACK's arbitrary sign: Score-CAM / Ablation-CAM give
``ReLU(± projection)`` (ours before the ReLU, rectified with the sign that matches, image by
image); FullGrad min-max scales the projection, so the other sign gives ``1 - map``.
"""
import gradcam_peer
import jax.numpy as jnp
import numpy as np
import pytest
from posthoc_harness import close, torch_layer

from infocam_jax.maps import posthoc


def _inputs(nets, arch, size):
    """Images ``[2, size, size, 3]``, their NCHW tensor and the second-largest logit's class."""
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    model, variables, _ = nets[arch]
    images = np.random.default_rng(3).standard_normal((2, size, size, 3)).astype(np.float32)
    logits = np.asarray(model.apply(variables, images, train=False)[0])
    targets = np.argsort(logits, axis=-1)[:, -2]
    return images, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), targets


def _half_wave(ours_projection, peer, rtol):
    plus, minus = np.maximum(ours_projection, 0), np.maximum(-ours_projection, 0)
    pick = np.abs(plus - peer).max(axis=(1, 2)) <= np.abs(minus - peer).max(axis=(1, 2))
    assert np.abs(peer).max() > 0
    close(np.where(pick[:, None, None], plus, minus), peer, rtol)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_perturbation_eigen_smooth_parity_with_peer(grad_cam, posthoc_nets, method):
    model, variables, net = posthoc_nets["resnet50"]
    # 40x40: bn1 at 20x20, more positions than its 64 channels (the projection's n > K path),
    # and layer3 at 3x3 (at 20-32 every 3x3 convolution of layer3 runs on a 2x2 map, XLA:CPU's
    # slow case: tests/test_posthoc_perturbation_zoo.py, PARITY_NETS; 128 forward passes).
    images, x, targets = _inputs(posthoc_nets, "resnet50", 40)
    ours = np.asarray(posthoc.compute(method, model, variables, images, jnp.asarray(targets),
                                      layer="bn1", relu=False, eigen_smooth=True,
                                      chunk_size=32))
    peer = gradcam_peer.raw_maps(grad_cam, method, net, torch_layer(net, "bn1"), x, targets,
                                 batch_size=32, eigen_smooth=True)
    # (Without the option the peer's map is the weighted channel sum, not this projection.)
    _half_wave(ours, peer, 1e-3)


@pytest.mark.parametrize("arch, size", [("vgg16_gap", 32)])
def test_fullgrad_eigen_smooth_parity_with_peer(grad_cam, posthoc_nets, arch, size):
    model, variables, net = posthoc_nets[arch]
    images, x, targets = _inputs(posthoc_nets, arch, size)
    ours = np.asarray(posthoc.compute("fullgrad", model, variables, images,
                                      jnp.asarray(targets), eigen_smooth=True))
    assert ours.shape == (2, size, size) and ours.min() >= 0 and ours.max() <= 1 + 1e-6
    peer = gradcam_peer.raw_maps(grad_cam, "fullgrad", net, torch_layer(net, "features"), x,
                                 targets, eigen_smooth=True)
    flipped = 1.0 - ours
    pick = np.abs(ours - peer).max(axis=(1, 2)) <= np.abs(flipped - peer).max(axis=(1, 2))
    close(np.where(pick[:, None, None], ours, flipped), peer, 1e-3)


def test_fullgrad_eigen_smooth_needs_eight_pixels(posthoc_nets):
    model, variables, _ = posthoc_nets["vgg16_gap"]
    with pytest.raises(ValueError, match="at least 8 x 8"):
        posthoc.compute("fullgrad", model, variables, np.zeros((1, 4, 4, 3), np.float32),
                        eigen_smooth=True)
