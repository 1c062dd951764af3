r"""Writes tests/fixtures/inception_parity.npz: the reference's InceptionV3 networks (CAM, ADL,
ACoL, SPG) run on fixed inputs with deterministic synthetic weights and fixed random masks.

Builds ``wsol.inception.inception_v3(method, num_classes=M, large_feature_map=True, ...)`` of a
clovaai/wsolevaluation checkout, fills every state-dict tensor with :func:`synthetic_tensor`
(seeded per key name, so the test regenerates the same weights without storing 25-42 M
numbers), and records, numbers only:

* ``keys`` / ``shapes``: the reference's state-dict names and shapes (per method);
  SPG's 224x224 attention maps at every 8th pixel;
* ``images`` [B, H, W, 3] NHWC and ``labels`` [B];
* eval mode (BatchNorm running statistics, no dropout / ADL): logits, and the CAMs of
  ``labels`` that ``forward(images, labels, return_cam=True)`` returns (ACoL: its fused
  max-of-normalised maps; SPG: also its side logits);
* train mode (BatchNorm batch statistics) with the random draws replaced by the stored ones:
  ``F.dropout`` multiplies by ``mask / (1 - p)`` with the stored masks (in call order:
  before SPG_A3_1b, before SPG_A3_2b, after it); ADL's ``torch.rand`` returns the stored
  ``adl_u`` (drop mask iff ``u + drop_rate >= 1``); the outputs, the method's loss
  (``get_loss`` of the reference: CE for CAM / ADL, ``wsol.method.acol.get_loss``,
  ``wsol.method.spg.get_loss``).

    python tools/inception_parity_fixtures.py --reference=PATH/TO/wsolevaluation \
        --out=tests/fixtures/inception_parity.npz

tests/test_inception_parity.py regenerates the weights with :func:`synthetic_state`, converts
them with ``convert.convert_state_dict`` / the method key maps and compares.
"""
import argparse
import contextlib
import importlib
import sys
import zlib

import numpy as np

NUM_CLASSES = 5
IMAGE_SIZE = (32, 48)  # the smallest size with a 4x6 map: the ceil-mode stem pools matter
BATCH = 2
SEED = 0
DROPOUT = 0.5
ADL_DROP_RATE, ADL_GAMMA = 0.75, 0.9
ADL_U = (0.5, 0.0, 0.9)  # -> drop mask, importance map, drop mask (ADL_5d, ADL_6e, ADL_A3_2b)
ACOL_THRESHOLD = 0.7
SPG_THRESHOLDS = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
METHODS = ("cam", "adl", "acol", "spg")
ATTENTION_STRIDE = 8  # SPG's 224x224 attention maps are stored at every 8th pixel


def synthetic_tensor(key: str, shape, seed: int = SEED) -> np.ndarray:
    """The deterministic value of one state-dict tensor (a function of ``key`` and ``shape``).

    Conv weights (4-D) ~ N(0, 2 / fan_in) (He: keeps activations O(1) through the trunk);
    BatchNorm weight / running_var ~ U(0.5, 1.5); biases and running_mean ~ N(0, 0.1^2);
    ``num_batches_tracked`` = 0.
    """
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    shape = tuple(int(s) for s in shape)
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if key.endswith(("running_var", "bn.weight")):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def synthetic_state(keys, shapes, seed: int = SEED):
    """{key: synthetic_tensor(key, shape)}; ``shapes`` rows are padded with -1."""
    return {k: synthetic_tensor(k, [s for s in shape if s >= 0], seed)
            for k, shape in zip(keys, shapes)}


def pad_shapes(shapes):
    out = -np.ones((len(shapes), 4), np.int64)
    for i, s in enumerate(shapes):
        out[i, :len(s)] = s
    return out


def inputs(seed: int = SEED):
    """(images [B, H, W, 3] float32, labels int32 [B], dropout masks (NHWC bool, 3 of them))."""
    rng = np.random.default_rng(seed + 1)
    images = rng.standard_normal((BATCH, *IMAGE_SIZE, 3)).astype(np.float32)
    labels = np.array([3, 1], np.int32)
    return images, labels


def _dropout_masks(rng, h, w):
    shapes = ((BATCH, h, w, 768), (BATCH, h, w, 1024), (BATCH, h, w, 1024))
    return [rng.random(s) >= DROPOUT for s in shapes]


@contextlib.contextmanager
def _patched(torch, masks, adl_u):
    """torch F.dropout -> the stored NHWC masks in call order; torch.rand([]) -> adl_u."""
    functional = torch.nn.functional
    real_dropout, real_rand = functional.dropout, torch.rand
    pending_masks, pending_u = list(masks), list(adl_u)

    def dropout(x, p=0.5, training=True, inplace=False):  # pylint: disable=unused-argument
        if not training:
            return x
        mask = torch.from_numpy(np.ascontiguousarray(pending_masks.pop(0).transpose(0, 3, 1, 2)))
        if tuple(mask.shape) != tuple(x.shape):
            raise RuntimeError(f"dropout mask {tuple(mask.shape)} for input {tuple(x.shape)}")
        return x * mask.to(x.dtype) / (1.0 - p)

    def rand(*args, **kwargs):
        if args and list(args[0]) == [] and pending_u:
            return torch.tensor(pending_u.pop(0), dtype=kwargs.get("dtype", torch.float32))
        return real_rand(*args, **kwargs)

    functional.dropout, torch.rand = dropout, rand
    try:
        yield pending_masks, pending_u
    finally:
        functional.dropout, torch.rand = real_dropout, real_rand


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def run_method(torch, method, images, labels, masks):
    """Eval and train outputs of one reference network; returns {name: array}."""
    inception = sys.modules["wsol.inception"]
    net = inception.inception_v3(method, num_classes=NUM_CLASSES, large_feature_map=True,
                                 acol_drop_threshold=ACOL_THRESHOLD,
                                 adl_drop_rate=ADL_DROP_RATE, adl_drop_threshold=ADL_GAMMA)
    sd = net.state_dict()
    keys = sorted(sd)
    state = synthetic_state(keys, pad_shapes([tuple(sd[k].shape) for k in keys]))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels.astype(np.int64))
    out = {"keys": np.array(keys), "shapes": pad_shapes([tuple(sd[k].shape) for k in keys])}
    net.eval()
    with torch.no_grad():
        result = net(x)
        out["eval/logits"] = result["logits"].numpy()
        out["eval/cams"] = net(x, y, return_cam=True).numpy()
        if method == "acol":
            labelled = net(x, y)
            out["eval/logits_b"] = labelled["logit_b"].numpy()
        if method == "spg":
            labelled = net(x, y)
            for name in ("logits_b1", "logits_b2", "logits_c"):
                out[f"eval/{name}"] = labelled[name].numpy()[:, 0]
            every = slice(None, None, ATTENTION_STRIDE)
            out["eval/attention"] = labelled["attention"].numpy()[:, 0, every, every]
            out["eval/fused_attention"] = labelled["fused_attention"].numpy()[:, 0, every,
                                                                               every]
    net.train()
    uses_dropout = method in ("cam", "spg")
    with _patched(torch, masks if uses_dropout else [], ADL_U if method == "adl" else ()) \
            as (left_masks, left_u):
        result = net(x, y)
    if left_masks or left_u:
        raise RuntimeError(f"{method}: unused draws ({len(left_masks)} masks, {len(left_u)} u)")
    if method == "acol":
        loss = sys.modules["wsol.method.acol"].get_loss(result, y)
        out["train/logits_b"] = result["logit_b"].detach().numpy()
    elif method == "spg":
        spg = sys.modules["wsol.method.spg"]
        loss = spg.get_loss(result, y, SPG_THRESHOLDS)
        for name in ("logits_b1", "logits_b2", "logits_c"):
            out[f"train/{name}"] = result[name].detach().numpy()[:, 0]
        every = slice(None, None, ATTENTION_STRIDE)
        out["train/attention"] = result["attention"].detach().numpy()[:, 0, every, every]
    else:
        loss = torch.nn.CrossEntropyLoss()(result["logits"], y)
    out["train/logits"] = result["logits"].detach().numpy()
    out["train/loss"] = np.array(loss.item(), np.float64)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, help="clovaai/wsolevaluation checkout")
    parser.add_argument("--out", default="tests/fixtures/inception_parity.npz")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    import torch  # pylint: disable=import-outside-toplevel
    torch.manual_seed(0)
    sys.path.insert(0, args.reference)
    importlib.import_module("wsol")
    images, labels = inputs()
    masks = _dropout_masks(np.random.default_rng(SEED + 2), 4, 6)
    arrays = {"images": images, "labels": labels, "adl_u": np.array(ADL_U)}
    for i, m in enumerate(masks):
        arrays[f"dropout_mask_{i}"] = m
    for method in args.methods.split(","):
        for name, value in run_method(torch, method, images, labels,
                                      masks).items():
            arrays[f"{method}/{name}"] = value
        print(method, "logits", arrays[f"{method}/eval/logits"].round(3).tolist(),
              "loss", float(arrays[f"{method}/train/loss"]))
    np.savez_compressed(args.out, **arrays)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
