"""Tests of torchvision-state-dict import (infocam_jax.models.convert) and PyTorch parity.

The mapping tests use synthetic NumPy state dicts with torchvision's names and shapes. Where
torch is importable, small PyTorch reference networks (tests/torch_twins.py; torchvision is not
needed) are loaded from the same random state dict and compared with our Flax models; without
torch those tests skip with the reason (``pytest.importorskip``).
"""
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import models
from infocam_jax.models import convert

TORCH_REASON = "torch is not installed: PyTorch parity / .pth tests skipped"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# torchvision vgg16 (configuration D); "M" = 2x2 max-pool. WSOL drops the last pool.
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
RESNET50_LAYERS = [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 1)]  # layer4 stride 1


# --- synthetic torchvision state dicts (NumPy only) ---------------------------------------

def _conv(rng, out, inp, k):
    return (rng.standard_normal((out, inp, k, k)) * np.sqrt(2.0 / (inp * k * k))).astype(
        np.float32)


def _bn(rng, state, prefix, c):
    state[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    state[f"{prefix}.bias"] = (rng.standard_normal(c) * 0.1).astype(np.float32)
    state[f"{prefix}.running_mean"] = (rng.standard_normal(c) * 0.1).astype(np.float32)
    state[f"{prefix}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    state[f"{prefix}.num_batches_tracked"] = np.array(7, np.int64)


def vgg16_state(seed=0, num_classes=None):
    """torchvision vgg16 features (+ tiny stand-in classifier); WSOL conv6/fc if num_classes."""
    rng = np.random.default_rng(seed)
    state, idx, inp = {}, 0, 3
    for v in VGG16_CFG:
        if v == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = _conv(rng, v, inp, 3)
        state[f"features.{idx}.bias"] = (rng.standard_normal(v) * 0.1).astype(np.float32)
        idx, inp = idx + 2, v
    # torchvision's classifier (dropped by the import); tiny shapes keep the test light.
    for i in (0, 3, 6):
        state[f"classifier.{i}.weight"] = np.zeros((4, 4), np.float32)
        state[f"classifier.{i}.bias"] = np.zeros((4,), np.float32)
    if num_classes:
        state["conv6.weight"] = _conv(rng, 1024, 512, 3)
        state["conv6.bias"] = (rng.standard_normal(1024) * 0.1).astype(np.float32)
        state["fc.weight"] = (rng.standard_normal((num_classes, 1024)) * 0.05).astype(np.float32)
        state["fc.bias"] = (rng.standard_normal(num_classes) * 0.1).astype(np.float32)
    return state


def resnet50_state(seed=0, num_classes=1000):
    rng = np.random.default_rng(seed)
    state = {"conv1.weight": _conv(rng, 64, 3, 7)}
    _bn(rng, state, "bn1", 64)
    inp = 64
    for L, (n, width, _) in enumerate(RESNET50_LAYERS, start=1):
        for i in range(n):
            p = f"layer{L}.{i}"
            state[f"{p}.conv1.weight"] = _conv(rng, width, inp, 1)
            state[f"{p}.conv2.weight"] = _conv(rng, width, width, 3)
            state[f"{p}.conv3.weight"] = _conv(rng, width * 4, width, 1) * 0.3
            for j, c in ((1, width), (2, width), (3, width * 4)):
                _bn(rng, state, f"{p}.bn{j}", c)
            if i == 0:
                state[f"{p}.downsample.0.weight"] = _conv(rng, width * 4, inp, 1)
                _bn(rng, state, f"{p}.downsample.1", width * 4)
            inp = width * 4
    state["fc.weight"] = (rng.standard_normal((num_classes, 2048)) * 0.02).astype(np.float32)
    state["fc.bias"] = (rng.standard_normal(num_classes) * 0.1).astype(np.float32)
    return state


def template(name, num_classes, fill=0.0):
    """Model variables filled with a constant (no compiled init needed)."""
    model = models.create(name, num_classes)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return model, jax.tree_util.tree_map(lambda s: np.full(s.shape, fill, s.dtype), abstract)


@pytest.fixture(scope="module")
def vgg_state():
    return vgg16_state()


@pytest.fixture(scope="module")
def resnet_state():
    return resnet50_state()


# --- mapping -------------------------------------------------------------------------------

def test_vgg16_mapping(vgg_state):
    _, variables = template("vgg16_gap", 7, fill=0.5)
    out = convert.convert_state_dict("vgg16", vgg_state, variables)
    p = out["params"]
    w = vgg_state["features.0.weight"]                                   # [64, 3, 3, 3] OIHW
    chex.assert_shape(p["conv1_1"]["kernel"], (3, 3, 3, 64))
    assert p["conv1_1"]["kernel"][1, 2, 0, 5] == w[5, 0, 1, 2]
    np.testing.assert_array_equal(p["conv5_3"]["kernel"],
                                  vgg_state["features.28.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["conv3_2"]["bias"], vgg_state["features.12.bias"])
    # conv6 and the head are new: they keep the initial values.
    for new in ("conv6", "head"):
        assert all(np.all(a == 0.5) for a in jax.tree_util.tree_leaves(p[new]))
    # Every other parameter was imported.
    for name, sub in p.items():
        if name not in ("conv6", "head"):
            assert all(not np.all(a == 0.5) for a in jax.tree_util.tree_leaves(sub)), name


def test_resnet50_mapping(resnet_state):
    _, variables = template("resnet50", 200, fill=0.5)
    out = convert.convert_state_dict("resnet50", resnet_state, variables)
    p, s = out["params"], out["batch_stats"]
    np.testing.assert_array_equal(p["layer3_5"]["conv2"]["kernel"],
                                  resnet_state["layer3.5.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["layer4_0"]["downsample_conv"]["kernel"][0, 0],
                                  resnet_state["layer4.0.downsample.0.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(p["layer4_0"]["downsample_bn"]["scale"],
                                  resnet_state["layer4.0.downsample.1.weight"])
    np.testing.assert_array_equal(p["bn1"]["bias"], resnet_state["bn1.bias"])
    np.testing.assert_array_equal(s["layer2_3"]["bn3"]["mean"],
                                  resnet_state["layer2.3.bn3.running_mean"])
    np.testing.assert_array_equal(s["layer1_0"]["bn1"]["var"],
                                  resnet_state["layer1.0.bn1.running_var"])
    assert all(np.all(a == 0.5) for a in jax.tree_util.tree_leaves(p["head"]))
    flat = jax.tree_util.tree_leaves_with_path(out)
    not_imported = [jax.tree_util.keystr(k) for k, a in flat if np.all(a == 0.5)]
    assert all("head" in k for k in not_imported), not_imported
    # Input arrays are not modified and the result does not alias them.
    assert not np.shares_memory(p["bn1"]["bias"], resnet_state["bn1.bias"])


def test_include_head_imports_fc(resnet_state):
    _, variables = template("resnet50", 1000)
    out = convert.convert_state_dict("resnet50", resnet_state, variables, include_head=True)
    np.testing.assert_array_equal(out["params"]["head"]["kernel"], resnet_state["fc.weight"].T)
    np.testing.assert_array_equal(out["params"]["head"]["bias"], resnet_state["fc.bias"])


def test_mismatch_errors_list_keys(resnet_state):
    _, variables = template("resnet50", 3)
    bad = dict(resnet_state)
    del bad["layer2.1.bn2.running_var"]
    bad["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError, match=r"missing keys \['layer2.1.bn2.running_var'\]"
                       r".*unexpected keys \['layer9.0.conv1.weight'\]"):
        convert.convert_state_dict("resnet50", bad, variables)
    bad = dict(resnet_state)
    bad["layer1.0.conv2.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    with pytest.raises(ValueError, match="layer1.0.conv2.weight: shape"):
        convert.convert_state_dict("resnet50", bad, variables)
    with pytest.raises(ValueError, match="vgg16, resnet50"):
        convert.key_map("vgg19")


def test_vgg_classifier_dropped_and_module_prefix(vgg_state):
    _, variables = template("vgg16_gap", 2)
    wrapped = {"module." + k: v for k, v in vgg_state.items() if not k.startswith("classifier")}
    out = convert.convert_state_dict("vgg16", wrapped, variables)
    np.testing.assert_array_equal(out["params"]["conv1_2"]["bias"], vgg_state["features.2.bias"])
    # A VGG state dict fed as resnet50 is rejected with a readable message.
    with pytest.raises(ValueError, match="missing keys.*conv1.weight"):
        convert.convert_state_dict("resnet50", vgg_state, template("resnet50", 2)[1])


def test_state_dict_files(tmp_path, vgg_state):
    path = str(tmp_path / "vgg.npz")
    np.savez(path, **vgg_state)
    loaded = convert.load_state_dict(path)
    assert set(loaded) == set(vgg_state)
    np.testing.assert_array_equal(loaded["features.5.weight"], vgg_state["features.5.weight"])
    other = tmp_path / "vgg.h5"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=".npz, .pth or .pt"):
        convert.load_state_dict(str(other))
    with pytest.raises(FileNotFoundError):
        convert.load_state_dict(str(tmp_path / "absent.npz"))


def test_pth_file(tmp_path, vgg_state):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    path = str(tmp_path / "vgg.pth")
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in vgg_state.items()}}, path)
    loaded = convert.load_state_dict(path)
    np.testing.assert_array_equal(loaded["features.26.weight"], vgg_state["features.26.weight"])


@pytest.mark.parametrize("suffix", ["npz", "msgpack"])
def test_save_load_variables_and_merge(tmp_path, suffix):
    _, variables = template("resnet50", 3, fill=0.25)
    path = str(tmp_path / f"vars.{suffix}")
    convert.save_variables(variables, path)
    loaded = convert.load_variables(path)
    chex.assert_trees_all_equal(loaded, variables)
    # Merge into a 5-class model: everything but the head comes from the file.
    _, fresh = template("resnet50", 5, fill=1.0)
    merged = convert.merge_pretrained(fresh, loaded)
    chex.assert_trees_all_equal_shapes(merged, fresh)
    np.testing.assert_array_equal(merged["params"]["head"]["kernel"], 1.0)
    np.testing.assert_array_equal(merged["batch_stats"]["layer4_2"]["bn3"]["var"], 0.25)
    with pytest.raises(ValueError, match="shape mismatches.*head"):
        convert.merge_pretrained(fresh, loaded, skip=())


def test_launcher_writes_npz(tmp_path, vgg_state):
    src, dst = str(tmp_path / "in.npz"), str(tmp_path / "out.npz")
    np.savez(src, **vgg_state)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "launch", "convert_weights.py"),
         "--arch=vgg16", f"--input={src}", f"--output={dst}", "--num_classes=9"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    out = convert.load_variables(dst)
    chex.assert_shape(out["params"]["head"]["kernel"], (1024, 9))
    np.testing.assert_array_equal(out["params"]["conv4_1"]["kernel"],
                                  vgg_state["features.17.weight"].transpose(2, 3, 1, 0))
    assert np.std(out["params"]["conv6"]["kernel"]) > 0  # freshly initialised, not zeros


# --- PyTorch reference networks and parity ---------------------------------------------------

def _close(actual, expected, rtol=1e-4):
    """Relative float32 agreement, scaled by the reference's magnitude."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol,
                               atol=rtol * float(np.abs(expected).max()))


@pytest.fixture(scope="module")
def parity_images():
    return np.random.default_rng(5).standard_normal((2, 32, 32, 3)).astype(np.float32)


def test_vgg16_gap_parity_with_torch(parity_images):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    import torch_twins  # pylint: disable=import-outside-toplevel  # imports torch
    torch.manual_seed(0)
    state = vgg16_state(seed=1, num_classes=6)
    net = torch_twins.load_torch(torch_twins.TorchVGG16GAP(6), state).eval()
    with torch.no_grad():
        ref_logits, ref_features = net(torch.from_numpy(parity_images.transpose(0, 3, 1, 2)))
    model, variables = template("vgg16_gap", 6)
    variables = convert.convert_state_dict("vgg16", state, variables, include_head=True)
    logits, features = jax.jit(lambda v, x: model.apply(v, x))(variables, parity_images)
    chex.assert_shape(features, (2, 2, 2, 1024))
    _close(features, ref_features.numpy().transpose(0, 2, 3, 1))
    _close(logits, ref_logits.numpy())


def test_resnet50_parity_with_torch(parity_images):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    import torch_twins  # pylint: disable=import-outside-toplevel  # imports torch
    state = resnet50_state(seed=2, num_classes=6)
    net = torch_twins.load_torch(torch_twins.TorchResNet50(6), state)
    x = torch.from_numpy(parity_images.transpose(0, 3, 1, 2))
    model, variables = template("resnet50", 6)
    variables = convert.convert_state_dict("resnet50", state, variables, include_head=True)
    # Evaluation: running statistics.
    net.eval()
    with torch.no_grad():
        ref_logits, ref_features = net(x)
    logits, features = jax.jit(lambda v, x: model.apply(v, x))(variables, parity_images)
    _close(features, ref_features.numpy().transpose(0, 2, 3, 1))
    _close(logits, ref_logits.numpy())
    # Training: batch statistics, and the running-mean update (torch momentum 0.1). Batch
    # statistics over 2 images x 2x2 positions (layer4) are ill-conditioned: float32 rounding
    # differences grow to ~1e-3 relative, hence the looser tolerance.
    net.train()
    with torch.no_grad():
        ref_logits, ref_features = net(x)
    (logits, features), updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
            variables, parity_images)
    _close(features, ref_features.numpy().transpose(0, 2, 3, 1), rtol=3e-3)
    _close(logits, ref_logits.numpy(), rtol=3e-3)
    _close(updates["batch_stats"]["layer3_2"]["bn2"]["mean"],
           net.layer3[2].bn2.running_mean.numpy(), rtol=1e-3)
