r"""Writes tests/fixtures/augment_reference.npz: the reference's HaS and CutMix on fixed draws.

Runs the PyTorch functions of a clovaai/wsolevaluation checkout (``wsol/method/has.py``,
``wsol/method/cutmix.py``) on small random NCHW batches with their random sources replaced by
draws chosen here (``random.random`` for HaS; ``np.random.beta``, ``torch.randperm`` and
``np.random.randint`` for CutMix; the ``.cuda()`` of its permutation is made a no-op and
``np.int``, removed from NumPy >= 1.24, is aliased to ``int``). It stores the inputs, the draws
and the outputs, numbers only, no reference code; tests/test_augment.py feeds the same draws to
``infocam_jax.methods.has`` / ``infocam_jax.methods.cutmix`` and compares.

    python tools/augment_reference_fixtures.py --reference=PATH/TO/wsolevaluation \
        --out=tests/fixtures/augment_reference.npz

CutMix's label-mixed loss (``main.py``: ``CE(logits, y_a) * lam + CE(logits, y_b) * (1 - lam)``)
is evaluated with ``torch.nn.CrossEntropyLoss`` on stored random logits.
"""
import argparse
import importlib
import random
import sys

import numpy as np
import torch

import fixture_provenance  # tools/fixture_provenance.py


def _load_reference(path):
    sys.path.insert(0, path)
    # wsol/method/__init__.py re-exports the functions under the modules' names: take the
    # modules from sys.modules.
    importlib.import_module("wsol.method")
    return sys.modules["wsol.method.has"], sys.modules["wsol.method.cutmix"]


def _run_has(has_module, images, grid, rate, u):
    """Reference HaS on ``images`` (NCHW) with ``random.random`` returning ``u`` in order."""
    values = iter(np.asarray(u, np.float64).ravel().tolist())
    real = random.random
    random.random = lambda: next(values)
    try:
        out = has_module.has(torch.from_numpy(images.copy()), grid, rate).numpy()
    finally:
        random.random = real
    left = sum(1 for _ in values)
    if left:
        raise RuntimeError(f"reference HaS consumed {u.size - left} of {u.size} draws")
    return out


def _run_cutmix(cutmix_module, images, labels, lam0, perm, cx, cy):
    """Reference CutMix with Beta -> lam0, randperm -> perm, randint -> cx then cy."""
    ints = iter([int(cx), int(cy)])
    real = (np.random.beta, np.random.randint, torch.randperm, torch.Tensor.cuda)
    np.random.beta = lambda a, b: float(lam0)
    np.random.randint = lambda n: next(ints)
    torch.randperm = lambda n: torch.as_tensor(perm, dtype=torch.long)
    torch.Tensor.cuda = lambda self, *a, **k: self
    if not hasattr(np, "int"):
        np.int = int
    try:
        x, ta, tb, lam = cutmix_module.cutmix(torch.from_numpy(images.copy()),
                                              torch.from_numpy(labels.copy()), 1.0)
    finally:
        np.random.beta, np.random.randint, torch.randperm, torch.Tensor.cuda = real
    return x.numpy(), ta.numpy(), tb.numpy(), float(lam)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, help="wsolevaluation checkout")
    parser.add_argument("--out", default="tests/fixtures/augment_reference.npz")
    args = parser.parse_args()
    has_module, cutmix_module = _load_reference(args.reference)
    rng = np.random.default_rng(20261203)
    out = {fixture_provenance.KEY: fixture_provenance.entry(
        args.reference, "tools/augment_reference_fixtures.py", torch.__version__)}

    # HaS. Square cases match ours; the non-square case records the reference's quirk.
    has_cases = [("square_g4", 3, 12, 12, 4, 0.5), ("square_g5", 2, 12, 12, 5, 0.3),
                 ("nonsquare_wide", 2, 8, 12, 4, 0.5), ("nonsquare_tall", 2, 12, 8, 4, 0.5)]
    for name, b, h, w, g, rate in has_cases:
        images = rng.normal(size=(b, 2, h, w)).astype(np.float32)
        # The reference draws ceil(W/g) x ceil(H/g) values per image (row offsets over W).
        nr, nc = -(-w // g), -(-h // g)
        u = rng.random((b, nr, nc))
        u.ravel()[::7] = rate  # exact ties: the reference hides when u <= drop_rate
        out[f"has/{name}/images"] = images
        out[f"has/{name}/u"] = u
        out[f"has/{name}/params"] = np.array([g, rate])
        out[f"has/{name}/out"] = _run_has(has_module, images, g, rate, u)

    # CutMix: (B, H, W, lam0, cx (row), cy (col)); edge cases of the clip included.
    cut_cases = [("mid", 4, 12, 12, 0.6, 5, 7), ("lam0_zero", 4, 12, 12, 0.0, 6, 6),
                 ("lam0_one", 4, 12, 12, 1.0, 3, 3), ("corner_low", 4, 12, 12, 0.3, 0, 0),
                 ("corner_high", 4, 12, 12, 0.3, 11, 11), ("odd_cut", 3, 11, 11, 0.5, 4, 9),
                 ("nonsquare", 4, 8, 14, 0.45, 7, 2), ("nonsquare_t", 4, 14, 8, 0.2, 1, 6)]
    for name, b, h, w, lam0, cx, cy in cut_cases:
        images = rng.normal(size=(b, 3, h, w)).astype(np.float32)
        labels = rng.integers(0, 5, size=b).astype(np.int64)
        perm = rng.permutation(b)
        x, ta, tb, lam = _run_cutmix(cutmix_module, images, labels, lam0, perm, cx, cy)
        logits = rng.normal(size=(b, 5)).astype(np.float32)
        ce = torch.nn.CrossEntropyLoss()
        t_logits = torch.from_numpy(logits)
        loss = (ce(t_logits, torch.from_numpy(ta)) * lam
                + ce(t_logits, torch.from_numpy(tb)) * (1.0 - lam))
        prefix = f"cutmix/{name}/"
        out[prefix + "images"] = images
        out[prefix + "labels"] = labels
        out[prefix + "draw"] = np.array([lam0, cx, cy], np.float64)
        out[prefix + "perm"] = perm.astype(np.int64)
        out[prefix + "out"] = x
        out[prefix + "targets"] = np.stack([ta, tb])
        out[prefix + "lam"] = np.array(lam, np.float64)
        out[prefix + "logits"] = logits
        out[prefix + "loss"] = np.array(float(loss), np.float64)
    np.savez_compressed(args.out, **out)
    print(f"wrote {len(out)} arrays to {args.out}")


if __name__ == "__main__":
    main()
