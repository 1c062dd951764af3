"""InceptionV3-WSOL: parameter count and feature-map sizes equal the reference's; the pooling
helpers it needs (ceil-mode max-pool, count-include-pad average pool) equal torch's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax.models import inception, layers

# Measured on the reference's InceptionCam(num_classes=200, large_feature_map=True), torch
# sum(p.numel() for p in net.parameters()).
REFERENCE_CAM_PARAMS_200 = 25_687_976


def test_parameter_count_and_map_sizes_match_reference():
    model = inception.inception_v3(200)
    images = jnp.zeros((2, 224, 224, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images))
    count = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(variables["params"]))
    assert count == REFERENCE_CAM_PARAMS_200
    # The reference: 28x28 at 224 (large feature map), 4x6 at 32x48 (its SPG side maps).
    for (h, w), expected in (((224, 224), (28, 28)), ((32, 48), (4, 6))):
        x = jnp.zeros((2, h, w, 3))
        logits, features = jax.eval_shape(
            lambda x=x: model.apply(model.init(jax.random.key(0), x), x))
        assert logits.shape == (2, 200)
        assert features.shape == (2, *expected, 1024)


@pytest.mark.parametrize("size", [14, 13, 6, 7])
def test_pools_match_torch(size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(size).standard_normal((2, size, size + 3, 4)).astype(np.float32)
    t = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)))
    expected = torch.nn.functional.max_pool2d(t, 3, 2, 1, ceil_mode=True).numpy()
    for impl in ("explicit", "xla"):
        out = layers.max_pool(jnp.asarray(x), 3, 2, 1, impl=impl, ceil_mode=True)
        np.testing.assert_array_equal(np.transpose(np.asarray(out), (0, 3, 1, 2)), expected)
    expected = torch.nn.functional.avg_pool2d(t, 3, 1, 1).numpy()
    out = layers.avg_pool(jnp.asarray(x), 3, 1, 1)
    np.testing.assert_allclose(np.transpose(np.asarray(out), (0, 3, 1, 2)), expected,
                               rtol=1e-6, atol=1e-6)


def test_rectangular_conv_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 8, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 1, 7)).astype(np.float32)  # OIHW, torch layout
    expected = torch.nn.functional.conv2d(torch.from_numpy(np.transpose(x, (0, 3, 1, 2))),
                                          torch.from_numpy(w), padding=(0, 3)).numpy()
    kernel = jnp.asarray(np.transpose(w, (2, 3, 1, 0)))
    out = layers.conv2d(jnp.asarray(x), kernel, 1, (0, 3), impl="explicit")
    np.testing.assert_allclose(np.transpose(np.asarray(out), (0, 3, 1, 2)), expected,
                               rtol=1e-4, atol=1e-4)
    grads = [jax.grad(lambda k: jnp.sum(jnp.sin(layers.conv2d(jnp.asarray(x), k, 1, (0, 3),
                                                              impl))))(kernel)
             for impl in ("explicit", "xla")]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-5)
