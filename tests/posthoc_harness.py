"""Shared pieces of the post-hoc map tests: the same converted weights in our models and in
PyTorch twins, the twin's layer for one of our layer paths, and the float tolerance.

``posthoc_nets`` (tests/conftest.py, session scope) builds ``{arch: (model, variables, torch
net)}`` once per process for every post-hoc test module. Torch is imported inside the functions:
callers reach them only after ``pytest.importorskip("torch")``.
"""
import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import models
from infocam_jax.models import convert

TORCH_REASON = "torch is not installed: PyTorch parity tests (autograd statements) skipped"
NUM_CLASSES = 6


def close(actual, expected, rtol=2e-4):
    """Agreement relative to the reference's magnitude (float32 through a deep network)."""
    expected = np.asarray(expected, np.float64)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=rtol * max(float(np.abs(expected).max()), 1e-12))


def logits_net(twin):
    """A twin that returns only the logits, its GAP input passing an ``Identity`` module
    (``gap_input``) so that hooks can name the features."""
    import torch  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    import torch_twins  # pylint: disable=import-outside-toplevel

    class Logits(torch.nn.Module):
        def __init__(self, twin):
            super().__init__()
            self.twin = twin
            self.gap_input = torch.nn.Identity()
            for m in twin.modules():  # in-place ReLUs would overwrite hooked activations
                if isinstance(m, torch.nn.ReLU):
                    m.inplace = False

        def forward(self, x):
            t = self.twin
            if isinstance(t, torch_twins.TorchVGG16GAP):
                f = torch.relu(t.conv6(t.features(x)))
            else:
                x = t.maxpool(torch.relu(t.bn1(t.conv1(x))))
                for L in range(1, 5):
                    x = getattr(t, f"layer{L}")(x)
                f = x
            return t.fc(self.gap_input(f).mean(dim=(2, 3)))

    return Logits(twin)


def torch_layer(net, path):
    """Our layer path -> the twin's module (the wrapper's gap_input for "features")."""
    import torch_twins  # pylint: disable=import-outside-toplevel  # after importorskip (nets)
    if path == "features":
        return net.gap_input
    t = net.twin
    if isinstance(t, torch_twins.TorchVGG16GAP):
        names = [f"conv{b}_{l}" for b, layers in enumerate(
            models.vgg.VGG16_BLOCKS, start=1) for l in range(1, len(layers) + 1)]
        if path == "conv6":
            return t.conv6
        return t.features[convert.VGG16_FEATURE_INDICES[names.index(path)]]
    module = t
    for part in path.split("/"):
        if part.startswith("layer"):
            L, i = part[len("layer"):].split("_")
            module = getattr(module, f"layer{L}")[int(i)]
        else:
            module = getattr(module, part)
    return module


def make_nets():
    """{arch: (our model, our variables, torch wrapper)} on the same converted weights."""
    import test_convert as tc  # pylint: disable=import-outside-toplevel  # state dicts
    import torch_twins  # pylint: disable=import-outside-toplevel  # imports torch
    out = {}
    for arch, name, state in (("vgg16", "vgg16_gap", tc.vgg16_state(3, NUM_CLASSES)),
                              ("resnet50", "resnet50", tc.resnet50_state(4, NUM_CLASSES))):
        twin = (torch_twins.TorchVGG16GAP if arch == "vgg16"
                else torch_twins.TorchResNet50)(NUM_CLASSES)
        net = logits_net(torch_twins.load_torch(twin, state)).eval()
        model, variables = tc.template(name, NUM_CLASSES)
        variables = convert.convert_state_dict(arch, state, variables, include_head=True)
        out[name] = (model, jax.tree_util.tree_map(jnp.asarray, variables), net)
    return out
