"""InceptionV3 (CAM, ADL, ACoL) equals the reference WSOL evaluation's networks: the same
synthetic weights (converted with convert.py from the reference's state-dict names), fixed
32x48 inputs, the same dropout masks and ADL draws; logits, CAMs, losses and gradients.

The reference's numbers come from tests/fixtures/inception_parity.npz, written once by
tools/inception_parity_fixtures.py from a clovaai/wsolevaluation checkout (numbers only). The
weights are regenerated here from their names (``synthetic_state`` of that tool).
"""
import importlib.util
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infocam_jax import cams, models
from infocam_jax.models import acol as acol_lib
from infocam_jax.models import convert

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "inception_parity.npz"


def _tool():
    spec = importlib.util.spec_from_file_location(
        "inception_parity_fixtures", REPO / "tools" / "inception_parity_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _tool()
DROPOUT_MODULES = ("dropout_A3_1b", "dropout_A3_2b", "dropout_A4")  # reference call order


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def _network(ref, method):
    """(model, converted variables): every leaf comes from the reference's state dict."""
    model = models.create("inception_v3", TOOL.NUM_CLASSES, method=method,
                          large_feature_map=True, adl_drop_rate=TOOL.ADL_DROP_RATE,
                          adl_gamma=TOOL.ADL_GAMMA, acol_drop_threshold=TOOL.ACOL_THRESHOLD)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(ref["images"]))
    template = jax.tree_util.tree_map(lambda s: np.full(s.shape, np.nan, s.dtype), abstract)
    state = TOOL.synthetic_state(ref[f"{method}/keys"], ref[f"{method}/shapes"])
    variables = convert.convert_state_dict("inception_v3", state, template, include_head=True,
                                           method=method)
    nan = [jax.tree_util.keystr(k) for k, a in jax.tree_util.tree_leaves_with_path(variables)
           if np.isnan(a).any()]
    assert not nan, f"leaves not converted: {nan[:5]}"
    return model, variables


def _fixed_dropout(masks, used):
    """Replaces each neck dropout by ``x * mask / (1 - p)`` with the reference's mask."""
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Dropout) and context.method_name == "__call__":
            used.append(module.name)
            mask = jnp.asarray(masks[DROPOUT_MODULES.index(module.name)])
            return jnp.where(mask, args[0] / (1.0 - module.rate), 0.0).astype(args[0].dtype)
        return next_fun(*args, **kwargs)
    return interceptor


def _close(actual, expected, rtol=2e-4, name=""):
    expected = np.asarray(expected)
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=rtol * scale,
                               err_msg=name)


def _reference_cams(method, variables, outputs, labels):
    """The CAMs of ``labels`` as the reference's ``return_cam`` reads them ([B, h, w])."""
    branches = models.readout(method, variables, outputs).branches
    maps = [cams.cam(b.features, b.kernel, labels) + b.bias[labels][:, None, None]
            for b in branches]
    if method == "acol":  # the reference: max of the per-map min-max normalised branches
        return jnp.maximum(acol_lib.minmax_hw(maps[0]), acol_lib.minmax_hw(maps[1]))
    return maps[0]


@pytest.mark.parametrize("method", ["cam", "adl", "acol"])
def test_matches_reference(ref, method, monkeypatch):
    model, variables = _network(ref, method)
    images, labels = jnp.asarray(ref["images"]), jnp.asarray(ref["labels"])
    masks = [ref[f"dropout_mask_{i}"] for i in range(3)]
    labelled = {"labels": labels} if method in ("acol", "spg") else {}
    used = []
    if method == "adl":  # the reference's draws: drop mask iff u + drop_rate >= 1
        draws = iter([bool(u + TOOL.ADL_DROP_RATE >= 1.0) for u in ref["adl_u"]])
        monkeypatch.setattr(jax.random, "bernoulli", lambda key, p: jnp.asarray(next(draws)))

    def evaluate(v):
        plain = model.apply(v, images)
        outputs = model.apply(v, images, labels=labels)
        return plain[0], outputs, _reference_cams(method, v, outputs, labels)

    def train_loss(v):
        with nn.intercept_methods(_fixed_dropout(masks, used)):
            outputs, _ = model.apply(v, images, train=True, mutable=["batch_stats"],
                                     rngs={"adl": jax.random.key(0)}, **labelled)
        return models.method_loss(method, outputs, labels), outputs

    @jax.jit
    def run(v):
        return evaluate(v), train_loss(v)

    (logits, eval_out, ref_cams), (loss, train_out) = run(variables)
    assert used == list(DROPOUT_MODULES if method == "cam" else [])
    p = f"{method}/"
    _close(logits, ref[p + "eval/logits"], name="eval logits")
    _close(ref_cams, ref[p + "eval/cams"], name="eval cams")
    _close(train_out[0], ref[p + "train/logits"], name="train logits")
    if method == "acol":
        _close(eval_out.logits_b, ref[p + "eval/logits_b"], name="eval logits_b")
        _close(train_out.logits_b, ref[p + "train/logits_b"], name="train logits_b")
    np.testing.assert_allclose(float(loss), float(ref[p + "train/loss"]), rtol=1e-4)
