"""(backbone, method) parity with the reference WSOL evaluation (clovaai/wsolevaluation).

* Parameter counts: ``methods.create_model(b, 200, method=m, large_feature_map=True)`` (shapes by
  ``jax.eval_shape``, no init) against the reference's ``sum(p.numel())``.
* Numbers: every case of every ``tests/fixtures/method_parity*.npz`` (written by
  ``tools/method_parity_fixtures.py`` from the reference's PyTorch models on synthetic
  weights). The weights are regenerated here from the stored state-dict keys
  (``tests/parity.py``'s ``synthetic_state_dict``, no torch), converted with
  ``convert.convert_state_dict`` in the reference's layout of the method (every leaf of ours
  must be written), and our eval logits, CAMs (the reference's ``return_cam`` reading of
  ``Method.readout``), training logits, loss (``Method.loss``) and loss terms must
  equal the reference's up to float tolerance.
"""
import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import parity  # tests/parity.py (tests/ is on sys.path under pytest)
import pytest

from infocam_jax import methods
from infocam_jax.evaluation import backends, forward
from infocam_jax.methods import spg
from infocam_jax.models import convert

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
FIXTURES = sorted(glob.glob(os.path.join(FIXTURE_DIR, "method_parity*.npz")))

# sum(p.numel() for p in model.parameters()) of the reference's wsol.vgg.vgg16 /
# wsol.resnet.resnet50 (pretrained=False, num_classes=200, large_feature_map=True,
# acol_drop_threshold=0.7, adl_drop_rate=0.75, adl_drop_threshold=0.9), built with torch 2.13
# from the clovaai/wsolevaluation checkout; measured 2026-12-03 (session "zoo", re-measured
# by session "parity"; both gave these numbers).
REFERENCE_PARAMETER_COUNTS = {
    ("vgg16_gap", "cam"): 19_639_304,
    ("vgg16_gap", "adl"): 19_639_304,
    ("vgg16_gap", "acol"): 43_440_336,
    ("vgg16_gap", "spg"): 28_977_162,
    ("resnet50", "cam"): 23_917_832,
    ("resnet50", "adl"): 23_917_832,
    ("resnet50", "acol"): 80_545_232,
    ("resnet50", "spg"): 61_671_690,
    # wsol.inception.inception_v3, the same arguments (session "incep", 2026-12-03; also
    # the counts with large_feature_map=False).
    ("inception_v3", "cam"): 25_687_976,
    ("inception_v3", "adl"): 25_687_976,
    ("inception_v3", "acol"): 42_410_096,
    ("inception_v3", "spg"): 37_634_986,
}


@pytest.mark.parametrize("backbone,method", sorted(REFERENCE_PARAMETER_COUNTS))
def test_parameter_count(backbone, method):
    model = methods.create_model(backbone, 200, method=method, large_feature_map=True)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(abstract["params"]))
    assert count == REFERENCE_PARAMETER_COUNTS[(backbone, method)]


@functools.lru_cache(maxsize=None)
def _fixture(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _cases():
    out = []
    for path in FIXTURES:
        out += [pytest.param(path, case, id=case) for case in parity.case_names(_fixture(path))]
    return out


ALL_FIXTURES = sorted(glob.glob(os.path.join(FIXTURE_DIR, "*.npz")))


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=os.path.basename)
def test_fixture_states_its_provenance(path):
    """Every reference fixture names the reference's repository and commit, the torch / numpy
    versions, the script and the date that made it (``tools/fixture_provenance.py``; entries a
    fixture made before provenance was stored say "unrecorded ...", never an invented value)."""
    record = parity.provenance(_fixture(path))
    assert record, f"{os.path.basename(path)} has no 'provenance' entry"
    missing = [k for k in parity.PROVENANCE_KEYS if not str(record.get(k, "")).strip()]
    assert not missing, f"{os.path.basename(path)}: provenance lacks {missing}: {record}"
    assert "clovaai/wsolevaluation" in record["repository"], record


def test_fixtures_present():
    assert FIXTURES, f"no method_parity*.npz in {FIXTURE_DIR}"
    names = [p.id for p in _cases()]
    assert len(names) == len(set(names)), "a case name appears in two fixtures"


@pytest.fixture(scope="module", params=[pytest.param(p.values, id=p.id) for p in _cases()])
def built(request):
    """``(path, case, meta, model, variables)`` of one case: ``parity.build`` (synthetic weights
    and their conversion, seconds for a full backbone) once for every test of the case; pytest
    runs a case's tests one after another and frees the variables before the next case."""
    path, case = request.param
    meta = parity.case_meta(_fixture(path), case)
    return (path, case, meta) + tuple(parity.build(meta))


def test_reference_parity(built):
    path, case, meta, model, variables = built
    fixture = _fixture(path)
    ours = parity.run_ours(meta, fixture[f"{case}/images"], fixture[f"{case}/labels"], model,
                           variables)
    source = parity.provenance_line(fixture)
    assert sorted(ours) == sorted(meta["outputs"]), source
    rtol, atol_frac = meta["tolerance"]["rtol"], meta["tolerance"]["atol_frac"]
    for name in meta["outputs"]:
        ref = fixture[f"{case}/ref/{name}"]
        assert ours[name].shape == ref.shape, (case, name, ours[name].shape, ref.shape, source)
        np.testing.assert_allclose(ours[name], ref, rtol=rtol,
                                   atol=atol_frac * float(np.max(np.abs(ref))),
                                   err_msg=f"{case}: {name}; {source}")


def _minmax_per_image(maps):
    """float64 ``(m - min m) / (max m - min m)`` of each image's ``[h, w]`` map."""
    maps = np.asarray(maps, np.float64)
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    assert np.all(span > 0), "a constant map: min-max is undefined"
    return (maps - lo) / span, span[:, 0, 0]


def test_production_cam_equals_reference(built):
    """The maps the eval step reads (``backends.forward_readout`` with the case's labels, then
    the "cam" kind of ``forward.readout_class_maps``, fusion included, region size 1) equal the
    reference's ``return_cam`` maps (``<case>/ref/cam``) at the features' resolution (no
    upsampling), after a per-image min-max normalisation of both.

    Why min-max is the right equivalence. Per image, our CAM is ``P = g·w_y`` (no bias,
    ``cams.cam``) for single-branch methods and ``max_i minmax(g_i·w_iy)`` for ACoL. The
    reference's map differs from it only by what its own rule adds:

    * ``channel_mean`` (CAM / ADL on VGG16 / ResNet50): ``(1/K) Σ_k w_yk g_k = P / K``, a
      positive scale;
    * ``class_map`` (SPG, and every InceptionV3 method): ``S_y = P + b_y``, an additive
      constant per image;
    * ``max_minmax`` (ACoL): ``max_i minmax(g_i·w_iy + b_iy)``; min-max removes each branch's
      bias, so it equals ``P`` itself.

    A per-image min-max ``(m - min m) / (max m - min m)`` is invariant to exactly a positive
    scale and an additive constant and to nothing else (a sign flip, a wrong branch, fusion or
    class changes it), so ``minmax(P) == minmax(ref)`` is the statement "equal up to the
    reference's normalisation". Tolerance: the parity test's bound on the raw map,
    ``rtol·|ref| + atol_frac·max|ref|`` <= ``(rtol + atol_frac)·max|ref|``, carried through the
    min-max (division by the map's span, two terms: the value and the minimum), i.e.
    ``atol = 2 (rtol + atol_frac) max|ref| / span(ref)`` per image, plus 1e-6.
    """
    path, case, meta, model, variables = built
    fixture = _fixture(path)
    images = jnp.asarray(fixture[f"{case}/images"], jnp.float32)
    labels = jnp.asarray(fixture[f"{case}/labels"], jnp.int32)
    _, readout = backends.forward_readout(model, variables, images, labels)
    ours = np.asarray(forward.readout_class_maps(("cam",), readout, labels, region_size=1)["cam"])
    ref = fixture[f"{case}/ref/cam"]
    context = (f"{case} ({meta['cam_rule']}, fusion {readout.fusion}); "
               f"{parity.provenance_line(fixture)}")
    assert ours.shape == ref.shape, (context, ours.shape, ref.shape)
    ours_n, _ = _minmax_per_image(ours)
    ref_n, span = _minmax_per_image(ref)
    rtol, atol_frac = meta["tolerance"]["rtol"], meta["tolerance"]["atol_frac"]
    scale = np.max(np.abs(ref), axis=(1, 2))
    atol = 2.0 * (rtol + atol_frac) * scale / span + 1e-6
    err = np.max(np.abs(ours_n - ref_n), axis=(1, 2))
    assert np.all(err <= atol), f"{context}: max |error| per image {err}, allowed {atol}"


@pytest.mark.parametrize("path,case", _cases())
def test_fixture_outputs_depend_on_the_input(path, case):
    """Guards the synthetic weights: for every stored map / logit output the two images differ
    by more than 3x the comparison's tolerance (weights that wash the input out, e.g. too small
    BatchNorm scales in a deep eval-mode network, would make the parity test blind)."""
    fixture = _fixture(path)
    meta = parity.case_meta(fixture, case)
    rtol, atol_frac = meta["tolerance"]["rtol"], meta["tolerance"]["atol_frac"]
    for name in meta["outputs"]:
        ref = fixture[f"{case}/ref/{name}"]
        if ref.ndim == 0 or name == "train/terms":
            continue
        scale = float(np.max(np.abs(ref)))
        assert float(np.max(np.abs(ref[0] - ref[1]))) > 3 * (rtol + atol_frac) * scale, name


def test_synthetic_tensor_is_keyed_by_name():
    a = parity.synthetic_tensor("layer1.0.conv1.weight", (4, 3, 3, 3))
    b = parity.synthetic_state_dict([("x.weight", (2, 2)), ("layer1.0.conv1.weight",
                                                             (4, 3, 3, 3))])
    np.testing.assert_array_equal(a, b["layer1.0.conv1.weight"])
    assert not np.array_equal(a, parity.synthetic_tensor("layer1.0.conv2.weight", (4, 3, 3, 3)))
    assert not np.array_equal(a, parity.synthetic_tensor("layer1.0.conv1.weight", (4, 3, 3, 3),
                                                         salt=1))
    var = parity.synthetic_tensor("bn1.running_var", (64,))
    assert var.dtype == np.float32 and var.min() >= 0.5
    with pytest.raises(ValueError, match="no rule"):
        parity.synthetic_tensor("conv.kernel", (3,))


def test_default_layout_is_torchvision():
    keys = convert.key_map("vgg16")
    assert sorted(int(k.split(".")[1]) for k in keys if k.endswith(".weight")) == list(
        convert.VGG16_FEATURE_INDICES)
    assert convert.key_map("resnet50", include_head=True, layout="cam") == convert.key_map(
        "resnet50", include_head=True)


@pytest.mark.parametrize("arch,method,large,key,target", [
    ("vgg16", "cam", True, "features.23.weight", ("conv5_1",)),   # no pool4
    ("vgg16", "adl", False, "features.18.weight", ("conv4_1",)),  # ADL after pool3
    ("vgg16", "adl", False, "features.26.weight", ("conv5_1",)),
    ("vgg16", "acol", True, "features.24.weight", ("conv5_1",)),  # pool4 kept as 3x3/1
    ("vgg16", "spg", True, "SPG_A_2.4.weight", ("conv5_3",)),
    ("vgg16", "spg", True, "SPG_A_3.2.weight", ("spg_a3_2",)),
    ("vgg16", "acol", False, "classifier_B.4.weight", ("acol", "b_head")),
    ("resnet50", "adl", False, "layer3.2.conv1.weight", ("layer3_1", "conv1")),
    ("resnet50", "adl", False, "layer4.3.bn3.running_var", ("layer4_2", "bn3")),
    ("resnet50", "spg", True, "SPG_A2.4.conv3.weight", ("layer3_5", "conv3")),
    ("resnet50", "spg", True, "SPG_A1.0.downsample.1.weight", ("layer3_0", "downsample_bn")),
    ("resnet50", "spg", True, "SPG_B_shared.2.weight", ("spg", "shared_out")),
])
def test_reference_layout_keys(arch, method, large, key, target):
    mapping = convert.key_map(arch, include_head=True, large_feature_map=large,
                              **methods.get(method).convert_options())
    assert mapping[key][0] == target


def test_layout_bad_options():
    with pytest.raises(ValueError, match="layout"):
        convert.key_map("vgg16", layout="has")
    with pytest.raises(ValueError, match="adl_positions"):
        convert.key_map("resnet50", layout="cam", adl_positions="30")
    with pytest.raises(ValueError, match="large_feature_map"):
        convert.key_map("resnet50", layout="cam", large_feature_map=1)


def test_head_keys_ignored_without_include_head():
    """A reference VGG-SPG state dict without include_head: the trunk is imported (conv5 from
    SPG_A_2), the SPG_A_3 / SPG_A_4 / SPG_B / SPG_C keys are ignored and our new layers keep
    their values."""
    path = os.path.join(FIXTURE_DIR, "method_parity.npz")
    meta = parity.case_meta(_fixture(path), "vgg16_gap-spg")
    state = parity.synthetic_state_dict(meta["state"], meta["salt"])
    assert any(k.startswith("SPG_C.") for k in state)
    model = methods.create_model("vgg16_gap", meta["num_classes"], method="spg",
                          large_feature_map=True)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    template = jax.tree_util.tree_map(lambda a: np.full(a.shape, 7.0, np.float32), abstract)
    out = convert.convert_state_dict("vgg16", state, template, large_feature_map=True,
                                     **methods.get("spg").convert_options())
    np.testing.assert_array_equal(out["params"]["conv5_3"]["kernel"],
                                  state["SPG_A_2.4.weight"].transpose(2, 3, 1, 0))
    assert np.all(out["params"]["spg"]["a4"]["kernel"] == 7.0)
    assert np.all(out["params"]["spg_a3_1"]["kernel"] == 7.0)
    del state["SPG_A_2.4.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['SPG_A_2.4.bias'\]"):
        convert.convert_state_dict("vgg16", state, template, large_feature_map=True,
                                   **methods.get("spg").convert_options())


def test_spg_attention_size_option():
    model = methods.create_model("vgg16_gap", 3, method="spg", spg_attention_size=(24, 20))
    out = jax.eval_shape(model.init_with_output, jax.random.key(0), jnp.zeros((1, 32, 48, 3)))
    assert out[0].attention.shape == (1, 24, 20)
    assert out[0].fused_attention.shape == (1, 24, 20)
    default = methods.create_model("vgg16_gap", 3, method="spg")
    out = jax.eval_shape(default.init_with_output, jax.random.key(0), jnp.zeros((1, 32, 48, 3)))
    assert out[0].attention.shape == (1, 32, 48)
    assert spg.check_attention_size(7) == (7, 7)
    for bad in (0, -1, (3,), (2, 0), 2.5, "224", True):
        with pytest.raises(ValueError, match="spg_attention_size"):
            methods.create_model("resnet50", 3, method="spg", spg_attention_size=bad)
