"""Parity with the reference WSOL evaluation: synthetic weights keyed by state-dict key, and our
side of a stored (backbone, method) fixture.

``tools/method_parity_fixtures.py`` builds the reference's PyTorch model of a case, fills it
with :func:`synthetic_state_dict` of its own ``state_dict()`` keys and shapes, runs it and
stores the numbers (no code) in ``tests/fixtures/method_parity*.npz``. ``tests/
test_method_parity.py`` regenerates the same weights from the stored keys (no torch), converts
them with ``convert.convert_state_dict`` (the reference's layout of the case's method), runs
:func:`run_ours` and compares name by name. Layout of a fixture and how to add a case:
``docs/interfaces.md`` ("Reference parity").

Every tensor depends only on ``(salt, key, shape)`` (a sha256 seed), never on the order of the
keys, so the two sides agree whatever builds the list.
"""
import hashlib
import json
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from infocam_jax import losses, methods
from infocam_jax.methods import spg as spg_lib
from infocam_jax.methods.acol import minmax_hw
from infocam_jax.models import convert

# How the reference's ``return_cam=True`` reads a model (its CAM), per network method.
CAM_RULES = {
    "cam": "channel_mean",   # (1/K) Σ_k w_yk g_k: a mean over channels, no bias
    "adl": "channel_mean",
    "acol": "max_minmax",    # max over branches of the per-class min-max of S = g·w + b
    "spg": "class_map",      # S_y = g·w_y + b_y
}


def _seed(key: str, salt: int) -> int:
    digest = hashlib.sha256(f"{int(salt)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


BN_WEIGHT = (0.2, 0.6)  # default range of BatchNorm scales


def synthetic_tensor(key: str, shape: Sequence[int], salt: int = 0,
                     bn_weight: Sequence[float] = BN_WEIGHT) -> np.ndarray:
    """A deterministic tensor for state-dict entry ``key`` of ``shape`` (uniform draws: cheap).

    Kind from the key and rank (U = uniform): ``*.running_var`` U(0.5, 1.5);
    ``*.running_mean`` U(-0.1, 0.1); ``*.num_batches_tracked`` int64 0; other 1-D ``*.weight``
    (BatchNorm scale) U(bn_weight), U(0.2, 0.6) by default (a case's ``meta["bn_weight"]``:
    InceptionV3's cases use U(0.8, 1.2), see tools/method_parity_fixtures.py); 1-D ``*.bias``
    U(-0.1, 0.1); 4-D ``*.weight`` (conv OIHW) U(-a, a), a = sqrt(6 / fan_in) (He-uniform,
    fan_in = I·kh·kw); 2-D ``*.weight`` (linear [out, in]) a = sqrt(3 / in). float32 unless
    stated.

    Raises:
      ValueError: a key / shape this does not know.
    """
    shape = tuple(int(d) for d in shape)
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)

    def uniform(lo, hi):
        u = np.random.default_rng(_seed(key, salt)).random(shape, np.float32)
        u *= np.float32(hi - lo)
        u += np.float32(lo)
        return u

    if key.endswith("running_var"):
        return uniform(0.5, 1.5)
    if key.endswith("running_mean") or (key.endswith(".bias") and len(shape) == 1):
        return uniform(-0.1, 0.1)
    if key.endswith(".weight") and len(shape) == 1:
        return uniform(float(bn_weight[0]), float(bn_weight[1]))
    if key.endswith(".weight") and len(shape) in (2, 4):
        a = float(np.sqrt((6.0 if len(shape) == 4 else 3.0) / int(np.prod(shape[1:]))))
        return uniform(-a, a)
    raise ValueError(f"synthetic_tensor: no rule for key {key!r} with shape {shape}")


def synthetic_state_dict(entries: Iterable[Tuple[str, Sequence[int]]], salt: int = 0,
                         bn_weight: Sequence[float] = BN_WEIGHT) -> Dict[str, np.ndarray]:
    """{key: :func:`synthetic_tensor`} for ``(key, shape)`` pairs (e.g. a fixture's
    ``meta["state"]``)."""
    return {key: synthetic_tensor(key, shape, salt, bn_weight) for key, shape in entries}


def dropout_mask(seed: int, call: int, shape: Sequence[int], rate: float) -> np.ndarray:
    """The keep mask of the ``call``-th dropout of a case: bool ``shape`` (NHWC), True with
    probability ``1 - rate``; a function of (seed, call, shape, rate) only."""
    u = np.random.default_rng([int(seed), int(call)]).random(tuple(int(d) for d in shape),
                                                              np.float32)
    return u >= np.float32(rate)


def _fixed_dropout(spec: Mapping[str, Any]):
    """An ``nn.intercept_methods`` interceptor: each Dropout module named in
    ``spec["modules"]`` (the reference's call order) applies ``x * mask / (1 - rate)`` with
    :func:`dropout_mask` of its index, whatever its ``deterministic`` flag."""
    modules = list(spec["modules"])

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not (isinstance(module, nn.Dropout) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        if module.name not in modules:
            raise ValueError(f"dropout module {module.name!r} not in the case's {modules}")
        x = args[0]
        mask = dropout_mask(spec["seed"], modules.index(module.name), x.shape, module.rate)
        return jnp.where(jnp.asarray(mask), x / (1.0 - module.rate), 0.0).astype(x.dtype)
    return interceptor


PROVENANCE_KEYS = ("repository", "commit", "torch", "numpy", "script", "date")


def provenance(fixture: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``provenance`` JSON entry of a loaded fixture (``tools/fixture_provenance.py``): the
    reference's repository and commit, the torch / numpy versions, script and date; {} when
    the fixture has none."""
    return json.loads(str(fixture["provenance"])) if "provenance" in fixture else {}


def provenance_line(fixture: Mapping[str, Any]) -> str:
    """One line naming where a fixture's numbers came from, for failure messages."""
    record = provenance(fixture)
    if not record:
        return "fixture provenance: none recorded"
    return "fixture provenance: " + ", ".join(f"{k} {record.get(k, '?')}"
                                              for k in PROVENANCE_KEYS)


def case_names(fixture: Mapping[str, Any]) -> List[str]:
    """The case names of a loaded fixture (keys ``"<case>/meta"``), sorted."""
    return sorted(k[:-len("/meta")] for k in fixture.keys() if k.endswith("/meta"))


def case_meta(fixture: Mapping[str, Any], case: str) -> Dict[str, Any]:
    """The JSON metadata of ``case``."""
    return json.loads(str(fixture[f"{case}/meta"]))


def build(meta: Mapping[str, Any]):
    """Our model of a case and its variables converted from the synthetic reference weights.

    Returns:
      (model, variables) with every leaf of ``variables`` written by the conversion (as jax
      arrays).

    Raises:
      ValueError: the conversion left a leaf of ours without a state-dict key (or the state
        dict has keys we do not map).
    """

    model = methods.create_model(meta["backbone"], meta["num_classes"], method=meta["method"],
                                 large_feature_map=meta["large_feature_map"], **meta["options"])
    shape = (1,) + tuple(meta["input"][1:3]) + (3,)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
    template = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, np.float32), abstract)
    state = synthetic_state_dict(meta["state"], meta["salt"],
                                 meta.get("bn_weight", BN_WEIGHT))
    conv = dict(meta["convert"])
    # The fixtures store the reference layout by method name; the converter takes its layout.
    conv.update(methods.get(conv.pop("method", "cam")).convert_options())
    variables = convert.convert_state_dict(meta["arch"], state, template, include_head=True,
                                           **conv)
    mapping = convert.key_map(meta["arch"], include_head=True, **conv)
    kinds = convert._KINDS  # pylint: disable=protected-access
    written = {(kinds[kind][0],) + path + (kinds[kind][1],) for path, kind in mapping.values()}
    leaves = set(flax.traverse_util.flatten_dict(flax.core.unfreeze(template)))
    unwritten = sorted("/".join(k) for k in leaves - written)
    if unwritten:
        raise ValueError(f"case {meta['name']}: no state-dict key for our leaves {unwritten}")
    return model, jax.device_put(variables)


def _cam(meta, readout, labels):

    rule = meta["cam_rule"]
    idx = jnp.arange(labels.shape[0])
    maps = [jnp.einsum("bhwk,km->bmhw", b.features, b.kernel, precision="highest")
            for b in readout.branches]
    if rule == "channel_mean":
        return maps[0][idx, labels] / readout.branches[0].features.shape[-1]
    if rule == "class_map":
        return maps[0][idx, labels] + readout.branches[0].bias[labels][:, None, None]
    if rule == "max_minmax":
        normalised = []
        for m, b in zip(maps, readout.branches):
            s = (m + b.bias[None, :, None, None])[idx, labels]           # [B, h, w]
            normalised.append(minmax_hw(s))
        return jnp.max(jnp.stack(normalised), axis=0)
    raise ValueError(f"unknown cam_rule {rule!r}; valid: {sorted(set(CAM_RULES.values()))}")


def run_ours(meta: Mapping[str, Any], images: np.ndarray, labels: np.ndarray,
             model=None, variables=None) -> Dict[str, np.ndarray]:
    """Our numbers of a case, under the fixture's output names (``docs/interfaces.md``).

    Args:
      meta: the case's metadata (:func:`case_meta`).
      images: float32 [B, H, W, 3]; labels: int [B].
      model, variables: from :func:`build` (built here when None).

    Returns:
      {name: float32 array} for the names in ``meta["outputs"]``.
    """

    if model is None:
        model, variables = build(meta)
    method = meta["method"]
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    out = {}

    def put(prefix, outputs):
        out[f"{prefix}/logits"] = outputs[0]
        if method == "acol":
            out[f"{prefix}/logits_b"] = outputs.logits_b
        if method == "spg":
            for name in ("logits_b1", "logits_b2", "logits_c"):
                out[f"{prefix}/{name}"] = getattr(outputs, name)

    # Only ACoL's outputs depend on the labels (branch B erases the class y; None -> argmax);
    # SPG's labels only pick its attention maps, which evaluation does not return.
    evaluated = model.apply(variables, images, train=False,
                            labels=labels if method == "spg" else None)
    put("eval", evaluated)
    with_labels = (model.apply(variables, images, train=False, labels=labels)
                   if method == "acol" else evaluated)
    out["cam"] = _cam(meta, methods.get(method).readout(variables, with_labels), labels)
    key = jax.random.key(0)
    if meta.get("dropout"):  # the reference's masks (tools/method_parity_fixtures.py)
        with nn.intercept_methods(_fixed_dropout(meta["dropout"])):
            trained, _ = model.apply(variables, images, train=True, labels=labels,
                                     rngs={"adl": key, "dropout": key}, mutable=["batch_stats"])
    else:
        trained, _ = model.apply(variables, images, train=True, labels=labels,
                                 rngs={"adl": key, "dropout": key}, mutable=["batch_stats"])
    put("train", trained)
    out["train/loss"] = methods.get(method).loss(
        methods.get(method).options(), trained, {"label": labels}, None,
        lambda logits, batch: losses.softmax_cross_entropy(logits, batch["label"]),
        losses.softmax_cross_entropy)
    ce = losses.softmax_cross_entropy
    if method == "acol":
        terms = [ce(trained.logits, labels), ce(trained.logits_b, labels)]
    elif method == "spg":
        terms = list(spg_lib.spg_loss_terms(trained, labels))
        out["train/attention_s8"] = trained.attention[:, ::8, ::8]
        out["train/fused_attention_s8"] = trained.fused_attention[:, ::8, ::8]
    else:
        terms = [ce(trained[0], labels)]
    out["train/terms"] = jnp.stack(terms)
    return {k: np.asarray(v, np.float32) for k, v in out.items() if k in meta["outputs"]}
