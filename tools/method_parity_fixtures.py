r"""Writes tests/fixtures/method_parity*.npz: the reference WSOL evaluation's (backbone, method)
models on synthetic weights, as numbers.

For every case it builds the reference's PyTorch model (``wsol.vgg.vgg16`` /
``wsol.resnet.resnet50`` / ``wsol.inception.inception_v3`` of a clovaai/wsolevaluation
checkout, ``pretrained=False``), replaces
every entry of its ``state_dict()`` with ``tests/parity.py``'s ``synthetic_tensor`` (keyed by
the entry's name, so the test regenerates the same weights without torch), and stores the
state-dict keys and shapes, fixed inputs and labels, and the reference's outputs:

* ``eval/*``: ``model.eval()``, ``model(x)`` (labels from its argmax): logits, ACoL's
  ``logit_b``, SPG's ``logits_b1`` / ``logits_b2`` / ``logits_c`` (one-channel maps squeezed);
* ``cam``: ``model.eval()``, ``model(x, labels=y, return_cam=True)``;
* ``train/*``: ``model.train()``, ``model(x, labels=y)`` (BatchNorm batch statistics): logits,
  the method's training loss (ACoL ``get_loss``, SPG ``get_loss`` with the reference's
  thresholds, CAM / ADL the cross-entropy of ``main.py``) and its terms (checked here to sum to
  the loss), SPG's attention maps every 8th pixel.

ADL's random choice is made certain instead of patched: a case built with
``adl_drop_rate`` 1.0 applies every drop mask (``floor(rand + 1) = 1``), 0.0 every importance
map, on both sides. Dropout (InceptionV3's CAM / SPG necks) stays on in training: the
reference's ``F.dropout`` is replaced by masks drawn from (case seed, call index)
(``parity.dropout_mask``, tests/parity.py), and the test gives our Dropout modules the same masks
(``meta["dropout"]``). Nothing of the reference's code is stored.

    PYTHONPATH=$PWD python tools/method_parity_fixtures.py --reference=PATH/TO/wsolevaluation \
        --out=tests/fixtures/method_parity.npz [--cases='vgg16_gap-*'] [--list]

Adding a case or a backbone: ``docs/interfaces.md`` ("Reference parity").
"""
import argparse
import fnmatch
import importlib
import json
import pathlib
import sys
import time

import numpy as np

import fixture_provenance  # tools/fixture_provenance.py

REFERENCE_BUILDERS = {
    "vgg16_gap": ("wsol.vgg", "vgg16"),
    "resnet50": ("wsol.resnet", "resnet50"),
    "inception_v3": ("wsol.inception", "inception_v3"),
}
CONVERT_ARCH = {"vgg16_gap": "vgg16", "resnet50": "resnet50", "inception_v3": "inception_v3"}
# The reference's InceptionV3 CAM / ADL return_cam reads its 1x1 class conv SPG_A4 at y
# (with bias), not VGG's / ResNet's channel mean.
CAM_RULE_OVERRIDES = {("inception_v3", "cam"): "class_map", ("inception_v3", "adl"): "class_map"}
# Backbones whose networks call F.dropout in training: our Dropout modules in the reference's
# call order. Their masks are drawn from (case seed, call index) on both sides
# (tests/parity.py dropout_mask), so training-mode numbers compare with dropout on.
DROPOUT_MODULES = {("inception_v3", "cam"): ("dropout_A3_1b", "dropout_A3_2b", "dropout_A4"),
                   ("inception_v3", "spg"): ("dropout_A3_1b", "dropout_A3_2b", "dropout_A4")}
INCEPTION_INPUT = (2, 32, 48)  # the smallest useful size: 4x6 maps, the ceil-mode pools matter
SPG_THRESHOLDS = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
ACOL_DROP_THRESHOLD = 0.7
ADL_GAMMA = 0.9
# B, H, W: H != W, odd feature sizes after the strides (VGG 5x7 / 2x3, ResNet 3x5 / 2x3).
INPUTS = {"vgg16_gap": (2, 40, 56), "resnet50": (2, 24, 40)}
NUM_CLASSES = 5
SALT = 0
TOLERANCE = {"rtol": 5e-4, "atol_frac": 5e-4}


def _cases():
    cases = []
    for backbone in ("vgg16_gap", "resnet50"):
        for large in (True, False):
            tag = "" if large else "-14"
            if backbone == "resnet50" and not large:
                # large_feature_map only changes layer3's stride, in the trunk every method
                # shares: one case checks it.
                cases.append(dict(name="resnet50-cam-14", backbone=backbone, method="cam",
                                  large_feature_map=False, options={}))
                continue
            for method in ("cam", "acol", "spg"):
                cases.append(dict(name=f"{backbone}-{method}{tag}", backbone=backbone,
                                  method=method, large_feature_map=large, options={}))
            for rate in (1.0, 0.0):
                cases.append(dict(name=f"{backbone}-adl-r{int(rate)}{tag}", backbone=backbone,
                                  method="adl", large_feature_map=large,
                                  options={"adl_drop_rate": rate}))
    for case in cases:
        # One input size per backbone: the eager ops our side compiles are shared by its cases.
        case.update(input=INPUTS[case["backbone"]], num_classes=NUM_CLASSES)
    # InceptionV3: large_feature_map=True only (False adds a parameter-free pool after
    # Mixed_5d, checked by tests/test_inception.py's shapes).
    for method in ("cam", "acol", "spg"):
        cases.append(dict(name=f"inception_v3-{method}", backbone="inception_v3", method=method,
                          large_feature_map=True, options={}))
    # ADL: the drop-mask case only (every layer applies its drop mask; the importance-map
    # rule is backbone-independent and checked on vgg16_gap / resnet50): InceptionV3's
    # cases are the slowest of the suite.
    cases.append(dict(name="inception_v3-adl-r1", backbone="inception_v3", method="adl",
                      large_feature_map=True, options={"adl_drop_rate": 1.0}))
    for case in cases[-4:]:
        # BatchNorm scales U(0.8, 1.2): with the default U(0.2, 0.6) the 70 stacked
        # conv-BN-ReLU units of InceptionV3 shrink the eval-mode signal to nothing (Mixed_6e
        # identical for two different images to 1e-7), and eval parity would test nothing.
        case.update(input=INCEPTION_INPUT, num_classes=NUM_CLASSES, bn_weight=[0.8, 1.2])
    return cases


CASES = _cases()


def _outputs(method):
    names = ["eval/logits", "cam", "train/logits", "train/loss", "train/terms"]
    if method == "acol":
        names += ["eval/logits_b", "train/logits_b"]
    if method == "spg":
        names += [f"{p}/{n}" for p in ("eval", "train")
                  for n in ("logits_b1", "logits_b2", "logits_c")]
        names += ["train/attention_s8", "train/fused_attention_s8"]
    return names


def _reference_model(ref, case):
    module, fn = REFERENCE_BUILDERS[case["backbone"]]
    build = getattr(importlib.import_module(module), fn)
    return build(case["method"], pretrained=False, num_classes=case["num_classes"],
                 large_feature_map=case["large_feature_map"],
                 acol_drop_threshold=ACOL_DROP_THRESHOLD,
                 adl_drop_rate=case["options"].get("adl_drop_rate", 0.75),
                 adl_drop_threshold=ADL_GAMMA)


def _run_case(case, parity, torch, spg_module):
    nn_f = torch.nn.functional
    model = _reference_model(None, case)
    state = model.state_dict()
    entries = [(k, list(v.shape)) for k, v in state.items()]
    synthetic = parity.synthetic_state_dict(entries, SALT,
                                            case.get("bn_weight", parity.BN_WEIGHT))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in synthetic.items()}, strict=True)
    b, h, w = case["input"]
    rng = np.random.default_rng(parity._seed(case["name"], SALT))  # pylint: disable=protected-access
    images = rng.standard_normal((b, h, w, 3)).astype(np.float32)
    labels = rng.integers(0, case["num_classes"], b).astype(np.int32)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels.astype(np.int64))
    method = case["method"]
    out = {}

    def put(prefix, d):
        out[f"{prefix}/logits"] = d["logits"]
        if method == "acol":
            out[f"{prefix}/logits_b"] = d["logit_b"]
        if method == "spg":
            for name in ("logits_b1", "logits_b2", "logits_c"):
                out[f"{prefix}/{name}"] = d[name][:, 0]

    margins = {}
    dropout_modules = DROPOUT_MODULES.get((case["backbone"], method), ())
    dropout_seed = parity._seed(case["name"] + "/dropout", SALT)  # pylint: disable=protected-access
    dropout_calls = []

    def fixed_dropout(t, p=0.5, training=True, inplace=False):  # pylint: disable=unused-argument
        if not training:
            return t
        b_, c_, h_, w_ = t.shape
        mask = parity.dropout_mask(dropout_seed, len(dropout_calls), (b_, h_, w_, c_), p)
        dropout_calls.append(list(t.shape))
        mask = torch.from_numpy(np.ascontiguousarray(mask.transpose(0, 3, 1, 2)))
        return t * mask.to(t.dtype) / (1.0 - p)

    real_dropout = nn_f.dropout
    with torch.no_grad():
        model.eval()
        put("eval", model(x))
        out["cam"] = model(x, labels=y, return_cam=True)
        model.train()
        nn_f.dropout = fixed_dropout
        try:
            d = model(x, labels=y)
        finally:
            nn_f.dropout = real_dropout
        if len(dropout_calls) != len(dropout_modules):
            raise RuntimeError(f"{case['name']}: {len(dropout_calls)} dropout calls, expected "
                               f"{len(dropout_modules)} ({dropout_modules})")
        put("train", d)
        ce = torch.nn.CrossEntropyLoss()
        if method == "acol":
            loss = sys.modules["wsol.method.acol"].get_loss(d, y)
            terms = [ce(d["logits"], y), ce(d["logit_b"], y)]
            fm = d["feat_map_a"][torch.arange(b), y]
            lo = fm.flatten(1).min(1)[0][:, None, None]
            hi = fm.flatten(1).max(1)[0][:, None, None]
            margins["acol_erase"] = float(((fm - lo) / (hi - lo) - ACOL_DROP_THRESHOLD)
                                          .abs().min())
        elif method == "spg":
            loss = spg_module.get_loss(d, y, spg_thresholds=SPG_THRESHOLDS)
            (h1, l1), (h2, l2), (h3, l3) = SPG_THRESHOLDS
            b2i = torch.sigmoid(nn_f.interpolate(d["logits_b2"], size=(224, 224),
                                                 mode="bilinear", align_corners=False))
            att = spg_module._get_loss_attention  # pylint: disable=protected-access
            terms = [ce(d["logits"], y), att(d["logits_b2"], d["attention"], h1, l1),
                     att(d["logits_b1"], b2i, h2, l2),
                     att(d["logits_c"], d["fused_attention"], h3, l3)]
            out["train/attention_s8"] = d["attention"][:, 0, ::8, ::8]
            out["train/fused_attention_s8"] = d["fused_attention"][:, 0, ::8, ::8]
        else:
            loss = ce(d["logits"], y)
            terms = [loss]
        terms = torch.stack(terms)
        if abs(float(terms.sum()) - float(loss)) > 1e-4 * max(1.0, abs(float(loss))):
            raise RuntimeError(f"{case['name']}: terms {terms} do not sum to loss {loss}")
        out["train/loss"] = loss
        out["train/terms"] = terms
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in out.items()}
    bad = [k for k, v in arrays.items() if not np.all(np.isfinite(v))]
    if bad:
        raise RuntimeError(f"{case['name']}: non-finite reference outputs {bad}")
    meta = dict(case, arch=CONVERT_ARCH[case["backbone"]],
                convert={"method": method, "large_feature_map": case["large_feature_map"]},
                state=entries, salt=SALT,
                cam_rule=CAM_RULE_OVERRIDES.get((case["backbone"], method),
                                                parity.CAM_RULES[method]),
                outputs=sorted(arrays), tolerance=TOLERANCE, margins=margins)
    if method == "spg":
        meta["options"] = dict(meta["options"], spg_attention_size=224)
    if method == "adl":
        meta["options"] = dict(meta["options"], adl_gamma=ADL_GAMMA)
    if dropout_modules:
        meta["dropout"] = {"seed": dropout_seed, "modules": list(dropout_modules)}
    return meta, images, labels, arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="path of a clovaai/wsolevaluation checkout")
    parser.add_argument("--out", help="output .npz")
    parser.add_argument("--cases", default="*", help="comma-separated fnmatch globs of names")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    args = parser.parse_args(argv)
    globs = args.cases.split(",")
    cases = [c for c in CASES if any(fnmatch.fnmatch(c["name"], g) for g in globs)]
    if args.list:
        print("\n".join(c["name"] for c in cases))
        return
    if not args.reference or not args.out:
        parser.error("--reference and --out are required")
    if not cases:
        parser.error(f"no case matches {args.cases!r}")
    import torch  # pylint: disable=import-outside-toplevel

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
    import parity  # pylint: disable=import-outside-toplevel  (tests/parity.py)
    torch.set_num_threads(1)
    sys.path.insert(0, args.reference)
    importlib.import_module("wsol.method")
    spg_module = sys.modules["wsol.method.spg"]
    stored = {fixture_provenance.KEY: fixture_provenance.entry(
        args.reference, "tools/method_parity_fixtures.py", torch.__version__)}
    for case in cases:
        start = time.time()
        meta, images, labels, arrays = _run_case(case, parity, torch, spg_module)
        stored[f"{case['name']}/meta"] = np.array(json.dumps(meta))
        stored[f"{case['name']}/images"] = images
        stored[f"{case['name']}/labels"] = labels
        for k, v in arrays.items():
            stored[f"{case['name']}/ref/{k}"] = v
        print(f"{case['name']}: {len(meta['state'])} tensors, margins {meta['margins']}, "
              f"loss {float(arrays['train/loss']):.5f}, {time.time() - start:.1f} s", flush=True)
    np.savez_compressed(args.out, **stored)
    print(f"wrote {args.out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
