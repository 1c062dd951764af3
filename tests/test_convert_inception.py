"""Torchvision InceptionV3 weight import (convert.py, arch "inception_v3") on a synthetic state
dict with torchvision's key names and shapes, written out here from the architecture
(torchvision is not needed): every trunk tensor lands on its flat name, Mixed_7* / AuxLogits /
fc are dropped, the WSOL neck and head stay fresh, and launch/convert_weights.py writes it."""
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import methods
from infocam_jax.models import convert

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# torchvision's InceptionV3, unit by unit: (name, in channels, out channels, (kh, kw)).
STEM = (("Conv2d_1a_3x3", 3, 32, (3, 3)), ("Conv2d_2a_3x3", 32, 32, (3, 3)),
        ("Conv2d_2b_3x3", 32, 64, (3, 3)), ("Conv2d_3b_1x1", 64, 80, (1, 1)),
        ("Conv2d_4a_3x3", 80, 192, (3, 3)))


def _inception_a(cin, pool):
    return (("branch1x1", cin, 64, (1, 1)), ("branch5x5_1", cin, 48, (1, 1)),
            ("branch5x5_2", 48, 64, (5, 5)), ("branch3x3dbl_1", cin, 64, (1, 1)),
            ("branch3x3dbl_2", 64, 96, (3, 3)), ("branch3x3dbl_3", 96, 96, (3, 3)),
            ("branch_pool", cin, pool, (1, 1)))


def _inception_c(c7):
    r, c = (1, 7), (7, 1)
    return (("branch1x1", 768, 192, (1, 1)), ("branch7x7_1", 768, c7, (1, 1)),
            ("branch7x7_2", c7, c7, r), ("branch7x7_3", c7, 192, c),
            ("branch7x7dbl_1", 768, c7, (1, 1)), ("branch7x7dbl_2", c7, c7, c),
            ("branch7x7dbl_3", c7, c7, r), ("branch7x7dbl_4", c7, c7, c),
            ("branch7x7dbl_5", c7, 192, r), ("branch_pool", 768, 192, (1, 1)))


def _inception_e(cin):
    return (("branch1x1", cin, 320, (1, 1)), ("branch3x3_1", cin, 384, (1, 1)),
            ("branch3x3_2a", 384, 384, (1, 3)), ("branch3x3_2b", 384, 384, (3, 1)),
            ("branch3x3dbl_1", cin, 448, (1, 1)), ("branch3x3dbl_2", 448, 384, (3, 3)),
            ("branch3x3dbl_3a", 384, 384, (1, 3)), ("branch3x3dbl_3b", 384, 384, (3, 1)),
            ("branch_pool", cin, 192, (1, 1)))


WSOL_BLOCKS = (
    ("Mixed_5b", _inception_a(192, 32)), ("Mixed_5c", _inception_a(256, 64)),
    ("Mixed_5d", _inception_a(288, 64)),
    ("Mixed_6a", (("branch3x3", 288, 384, (3, 3)), ("branch3x3dbl_1", 288, 64, (1, 1)),
                  ("branch3x3dbl_2", 64, 96, (3, 3)), ("branch3x3dbl_3", 96, 96, (3, 3)))),
    ("Mixed_6b", _inception_c(128)), ("Mixed_6c", _inception_c(160)),
    ("Mixed_6d", _inception_c(160)), ("Mixed_6e", _inception_c(192)))
# What the WSOL network drops (kept small here: only names matter for them).
DROPPED_BLOCKS = (
    ("Mixed_7a", (("branch3x3_1", 768, 192, (1, 1)), ("branch7x7x3_4", 192, 192, (3, 3)))),
    ("Mixed_7b", _inception_e(1280)[:2]), ("Mixed_7c", _inception_e(2048)[:2]),
    ("AuxLogits", (("conv0", 768, 128, (1, 1)), ("conv1", 128, 768, (5, 5)))))


def _units():
    for name, cin, cout, k in STEM:
        yield name, cin, cout, k
    for block, units in WSOL_BLOCKS:
        for name, cin, cout, k in units:
            yield f"{block}.{name}", cin, cout, k


def torchvision_inception_state(seed=0, dropped=True):
    """A torchvision-format InceptionV3 state dict of random float32 arrays."""
    rng = np.random.default_rng(seed)
    state = {}

    def unit(key, cin, cout, k):
        state[f"{key}.conv.weight"] = rng.standard_normal((cout, cin, *k)).astype(np.float32)
        state[f"{key}.bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        state[f"{key}.bn.bias"] = rng.standard_normal(cout).astype(np.float32)
        state[f"{key}.bn.running_mean"] = rng.standard_normal(cout).astype(np.float32)
        state[f"{key}.bn.running_var"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        state[f"{key}.bn.num_batches_tracked"] = np.array(7, np.int64)

    for key, cin, cout, k in _units():
        unit(key, cin, cout, k)
    if dropped:
        for block, units in DROPPED_BLOCKS:
            for name, cin, cout, k in units:
                unit(f"{block}.{name}", cin, cout, k)
        state["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
        state["AuxLogits.fc.bias"] = np.zeros((1000,), np.float32)
        state["fc.weight"] = np.zeros((1000, 2048), np.float32)
        state["fc.bias"] = np.zeros((1000,), np.float32)
    return state


def template(num_classes, fill=0.0, method="cam"):
    model = methods.create_model("inception_v3", num_classes, method=method)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return jax.tree_util.tree_map(lambda s: np.full(s.shape, fill, s.dtype), abstract)


@pytest.fixture(scope="module")
def state():
    return torchvision_inception_state()


def test_every_trunk_tensor_lands_on_its_name(state):
    out = convert.convert_state_dict("inception_v3", state, template(7, fill=0.5))
    p, s = out["params"], out["batch_stats"]
    w = state["Mixed_6b.branch7x7_2.conv.weight"]                     # [128, 128, 1, 7] OIHW
    k = p["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
    chex.assert_shape(k, (1, 7, 128, 128))
    assert k[0, 5, 3, 9] == w[9, 3, 0, 5]
    np.testing.assert_array_equal(p["Conv2d_1a_3x3"]["conv"]["kernel"],
                                  state["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["Mixed_6a"]["branch3x3"]["bn"]["scale"],
                                  state["Mixed_6a.branch3x3.bn.weight"])
    np.testing.assert_array_equal(p["Mixed_5d"]["branch_pool"]["bn"]["bias"],
                                  state["Mixed_5d.branch_pool.bn.bias"])
    np.testing.assert_array_equal(s["Mixed_6e"]["branch7x7dbl_5"]["bn"]["mean"],
                                  state["Mixed_6e.branch7x7dbl_5.bn.running_mean"])
    np.testing.assert_array_equal(s["Conv2d_4a_3x3"]["bn"]["var"],
                                  state["Conv2d_4a_3x3.bn.running_var"])
    # Every trunk leaf was imported (no 0.5 left), the neck and head were not.
    flat = jax.tree_util.tree_leaves_with_path(out)
    untouched = {k[1].key for k, a in flat if np.all(a == 0.5)}
    assert untouched == {"A3_1b", "A3_2b", "head"}
    imported = [a for k, a in flat if k[1].key.startswith(("Conv2d_", "Mixed_"))]
    assert len(imported) == 70 * 5 and not any(np.all(a == 0.5) for a in imported)
    assert not np.shares_memory(p["Mixed_5b"]["branch1x1"]["bn"]["bias"],
                                state["Mixed_5b.branch1x1.bn.bias"])


def test_same_trunk_import_for_every_method(state):
    cam = convert.convert_state_dict("inception_v3", state, template(3))
    for method in ("acol", "spg"):
        out = convert.convert_state_dict("inception_v3", state, template(3, method=method))
        for collection in ("params", "batch_stats"):
            trunk = {k: v for k, v in out[collection].items()
                     if k.startswith(("Conv2d_", "Mixed_"))}
            chex.assert_trees_all_equal(trunk, {k: cam[collection][k] for k in trunk})


def test_include_head_imports_the_reference_neck_and_class_conv(state):
    rng = np.random.default_rng(3)
    full = dict(state)
    full["SPG_A3_1b.0.weight"] = rng.standard_normal((1024, 768, 3, 3)).astype(np.float32)
    full["SPG_A3_1b.0.bias"] = rng.standard_normal(1024).astype(np.float32)
    full["SPG_A3_2b.0.weight"] = rng.standard_normal((1024, 1024, 3, 3)).astype(np.float32)
    full["SPG_A3_2b.0.bias"] = rng.standard_normal(1024).astype(np.float32)
    full["SPG_A4.weight"] = rng.standard_normal((5, 1024, 1, 1)).astype(np.float32)
    full["SPG_A4.bias"] = rng.standard_normal(5).astype(np.float32)
    out = convert.convert_state_dict("inception_v3", full, template(5), include_head=True)
    p = out["params"]
    np.testing.assert_array_equal(p["A3_2b"]["kernel"],
                                  full["SPG_A3_2b.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["A3_1b"]["bias"], full["SPG_A3_1b.0.bias"])
    np.testing.assert_array_equal(p["head"]["kernel"], full["SPG_A4.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(p["head"]["bias"], full["SPG_A4.bias"])
    with pytest.raises(ValueError, match=r"missing keys \['SPG_A3_1b.0.bias'"):
        convert.convert_state_dict("inception_v3", state, template(5), include_head=True)


def test_mismatches_are_listed(state):
    bad = dict(state)
    del bad["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    bad["Mixed_6f.branch1x1.conv.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError, match=r"missing keys \['Mixed_6c.branch7x7dbl_3.bn.running"
                       r"_var'\].*unexpected keys \['Mixed_6f.branch1x1.conv.weight'\]"):
        convert.convert_state_dict("inception_v3", bad, template(2))
    bad = dict(state)
    # torchvision's Mixed_6a shapes equal the WSOL ones; a wrong kernel size is caught.
    bad["Mixed_6a.branch3x3.conv.weight"] = np.zeros((384, 288, 1, 1), np.float32)
    with pytest.raises(ValueError, match="Mixed_6a.branch3x3.conv.weight: shape"):
        convert.convert_state_dict("inception_v3", bad, template(2))
    # Without the dropped parts (a WSOL checkpoint's trunk) it converts as well.
    convert.convert_state_dict("inception_v3", torchvision_inception_state(dropped=False),
                               template(2))


def test_launcher_writes_npz(tmp_path, state):
    src, dst = str(tmp_path / "in.npz"), str(tmp_path / "out.npz")
    np.savez(src, **state)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "launch", "convert_weights.py"),
         "--arch=inception_v3", f"--input={src}", f"--output={dst}", "--num_classes=9"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    out = convert.load_variables(dst)
    chex.assert_shape(out["params"]["head"]["kernel"], (1024, 9))
    np.testing.assert_array_equal(out["params"]["Mixed_6d"]["branch7x7dbl_4"]["conv"]["kernel"],
                                  state["Mixed_6d.branch7x7dbl_4.conv.weight"].transpose(2, 3, 1, 0))
    # The fresh neck is Xavier-uniform (the reference's init): bound sqrt(6 / (9 (768 + 1024))).
    kernel = out["params"]["A3_1b"]["kernel"]
    bound = np.sqrt(6.0 / (9 * (768 + 1024)))
    assert 0.9 * bound < np.max(np.abs(kernel)) <= bound
    assert np.all(out["params"]["A3_1b"]["bias"] == 0)
