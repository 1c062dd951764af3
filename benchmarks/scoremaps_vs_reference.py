r"""Benchmark: launch/evaluate_scoremaps.py vs the reference WSOL evaluation, as whole processes.

Builds a tree in a temporary folder (metadata in the reference's formats, one 224x224 ``.npy``
map per image, PNG masks for OpenImages), then runs, side by side as subprocesses,

* the reference ``evaluation.py`` from a checkout of clovaai/wsolevaluation outside this
  repository (``--reference_src``), started through a small shim that restores ``np.float``
  (removed from NumPy) and stubs ``munch`` / ``torchvision`` when they are not installed (the
  evaluation never uses them), and
* ``launch/evaluate_scoremaps.py`` with the same flags,

and prints, per number of maps N (``--n``), both wall times (process start to exit, imports
and compilation included), both peak resident set sizes (the child's ``ru_maxrss`` from
``os.wait4``), their ratio, both ``performance`` numbers, and our tool's start-up: seconds
from process start to the first map read (its report's ``timings_s``). The last line is a
Markdown table of the same figures.

Maps (``--maps``): ``smooth`` (default) are CAM-like: Gaussian blobs at the GT boxes' centres
plus a little noise on a 7x7, 14x14 or 28x28 grid (drawn per map), bicubic-upsampled to
224x224 and min-max normalised, as real CAMs are; ``noisy`` are the blobs drawn at 224x224 with
``--noise`` uniform noise (many small contours: OpenCV's slowest case).

  python benchmarks/scoremaps_vs_reference.py --reference_src /path/to/wsolevaluation
  python benchmarks/scoremaps_vs_reference.py --reference_src ... --n=300 --interval=0.01
  python benchmarks/scoremaps_vs_reference.py --reference_src ... --n=300,2000,10000 \
      --reference_n=300,2000          # the reference only where it finishes in minutes
  python benchmarks/scoremaps_vs_reference.py --reference_src ... --dataset OpenImages
  python benchmarks/scoremaps_vs_reference.py --skip_reference --keep /tmp/tree   # ours only
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_SHIM = r"""
import runpy, sys, types
import numpy as np
np.float = float  # removed in NumPy 1.24; the reference still uses it
np.int = int
try:
    import munch  # noqa: F401
except ImportError:
    class Munch(dict):
        def __getattr__(self, key):
            try:
                return self[key]
            except KeyError:
                raise AttributeError(key) from None
        def __setattr__(self, key, value):
            self[key] = value
    sys.modules["munch"] = types.ModuleType("munch")
    sys.modules["munch"].Munch = Munch
try:
    import torchvision  # noqa: F401
except ImportError:
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tv.transforms
src = sys.argv[1]
sys.path.insert(0, src)
sys.argv = ["evaluation.py"] + sys.argv[2:]
runpy.run_path(src + "/evaluation.py", run_name="__main__")
"""


def _noisy_map(rng, size, centres, noise):
    yy, xx = np.mgrid[:size, :size]
    m = np.zeros((size, size))
    for cx, cy in centres:
        s = rng.uniform(0.05, 0.2) * size
        m += rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    m += noise * rng.random((size, size))
    return (m - m.min()) / (m.max() - m.min())


GRIDS = (7, 14, 28)


def _smooth_map(rng, size, centres, noise):
    """A CAM-like map: blobs + ``noise / 10`` noise on a 7/14/28 grid, bicubic to ``size``."""
    grid = int(rng.choice(GRIDS))
    coarse = _noisy_map(rng, grid, [(cx * grid / size, cy * grid / size) for cx, cy in centres],
                        noise / 10)
    up = np.asarray(Image.fromarray(coarse.astype(np.float32), mode="F").resize(
        (size, size), Image.BICUBIC), np.float64)
    return (up - up.min()) / max(up.max() - up.min(), 1e-12)


def build_tree(root, dataset: str = "CUB", split: str = "val", num_maps: int = 120,
               seed: int = 0, noise: float = 0.3, dtype: str = "float32", size: int = 224,
               maps: str = "smooth"):
    """Writes ``root/{metadata,scoremaps,masks}`` for a CUB-like (one box), ILSVRC-like
    (1-3 boxes) or OpenImages-like (masks) dataset with ``smooth`` or ``noisy`` maps; returns
    the three folders."""
    draw = {"smooth": _smooth_map, "noisy": _noisy_map}[maps]
    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    meta = root / "metadata" / dataset / split
    maps_dir, mask_root = root / "scoremaps", root / "masks"
    meta.mkdir(parents=True, exist_ok=True)
    ids, labels, sizes, loc = [], [], [], []
    for n in range(num_maps):
        label = int(rng.integers(0, 10))
        image_id = f"{split}/{label:03d}.class/{n:05d}.jpg"
        w, h = (int(v) for v in rng.integers(150, 700, 2))
        centres = []
        if dataset == "OpenImages":
            folder = mask_root / dataset / os.path.dirname(image_id)
            folder.mkdir(parents=True, exist_ok=True)
            stem = os.path.splitext(image_id)[0]
            yy, xx = np.mgrid[:h, :w]
            for k in range(int(rng.integers(1, 3))):
                cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
                rx, ry = rng.uniform(0.05, 0.3) * w, rng.uniform(0.05, 0.3) * h
                inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
                Image.fromarray((inside * 255).astype(np.uint8)).save(
                    mask_root / dataset / f"{stem}_m{k}.png")
                ignore = f"{stem}_ignore.png" if k == 0 else ""
                loc.append((image_id, f"{stem}_m{k}.png", ignore))
                centres.append((cx * size / w, cy * size / h))
            ig = np.zeros((h, w), np.uint8)
            if rng.random() < 0.7:
                x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
                ig[y0:y0 + h // 3, x0:x0 + w // 3] = 255
            Image.fromarray(ig).save(mask_root / dataset / f"{stem}_ignore.png")
        else:
            for _ in range(1 if dataset == "CUB" else int(rng.integers(1, 4))):
                x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
                x1, y1 = int(rng.integers(x0 + 20, w)), int(rng.integers(y0 + 20, h))
                loc.append((image_id, x0, y0, x1, y1))
                centres.append(((x0 + x1) / 2 * size / w, (y0 + y1) / 2 * size / h))
        path = maps_dir / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, draw(rng, size, centres, noise).astype(dtype))
        ids.append(image_id)
        labels.append((image_id, label))
        sizes.append((image_id, w, h))

    def write(name, rows):
        (meta / name).write_text("".join(",".join(map(str, r)) + "\n" for r in rows))

    write("image_ids.txt", [(i,) for i in ids])
    write("class_labels.txt", labels)
    write("image_sizes.txt", [] if dataset == "OpenImages" else sizes)
    write("localization.txt", loc)
    return str(maps_dir), str(root / "metadata"), str(mask_root)


def _flags(maps, meta, masks, args) -> list:
    return [f"--scoremap_root={maps}", f"--metadata_root={meta}", f"--mask_root={masks}",
            f"--dataset_name={args.dataset}", f"--split={args.split}",
            f"--cam_curve_interval={args.interval}",
            f"--multi_contour_eval={args.multi_contour_eval}",
            f"--multi_iou_eval={args.multi_iou_eval}", "--iou_threshold_list", "30", "50", "70"]


def _run(cmd, cwd=None, env=None):
    """Runs ``cmd``; returns (wall seconds, stdout, peak RSS in MiB of that process)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read()
        if proc.returncode:
            sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{stdout}\n"
                     f"{err.read()}")
    return elapsed, stdout, usage.ru_maxrss / 1024  # Linux: kilobytes


def _ints(text: str) -> list:
    return [int(v) for v in str(text).split(",") if v.strip()]


def measure(args, n: int, run_reference: bool) -> dict:
    """One tree of ``n`` maps; both tools on it. Returns the row of figures."""
    with tempfile.TemporaryDirectory() as tmp:
        root = tmp
        if args.keep:  # one kept tree per case, reused by later runs
            root = os.path.join(args.keep, f"{args.maps}_{args.dataset}_{args.split}_{n}_"
                                f"{args.seed}_{args.noise}_{args.dtype}")
        done = os.path.join(root, "complete")
        if os.path.exists(done):
            maps, meta, masks = (os.path.join(root, d) for d in ("scoremaps", "metadata",
                                                                 "masks"))
        else:
            maps, meta, masks = build_tree(root, args.dataset, args.split, n, args.seed,
                                           args.noise, args.dtype, maps=args.maps)
            pathlib.Path(done).touch()
        if run_reference is None:  # --build_only
            return {}
        flags = _flags(maps, meta, masks, args)
        output = os.path.join(root, "ours.json")
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        row = {"n": n}
        row["ours_s"], _, row["ours_mib"] = _run(
            [sys.executable, str(REPO_ROOT / "launch" / "evaluate_scoremaps.py"), *flags,
             f"--output={output}", "--quiet"], env=env)
        with open(output) as f:
            report = json.load(f)
        row["ours"] = report["performance"]
        row["start_s"] = report.get("timings_s", {}).get("first_map_read")
        print(f"N={n}: ours {row['ours_s']:8.2f} s, {row['ours_mib']:7.0f} MiB peak, first map "
              f"read at {row['start_s']} s, performance {row['ours']:.6f}", flush=True)
        if run_reference:
            row["ref_s"], out, row["ref_mib"] = _run(
                [sys.executable, "-c", _SHIM, os.path.abspath(args.reference_src), *flags],
                cwd=args.reference_src)
            found = re.findall(r"localization: ([-0-9.eE+naN]+)", out)
            row["ref"] = float(found[-1]) if found else float("nan")
            print(f"N={n}: reference {row['ref_s']:8.2f} s, {row['ref_mib']:7.0f} MiB peak, "
                  f"performance {row['ref']:.6f}; speed-up {row['ref_s'] / row['ours_s']:.1f}x,"
                  f" |difference| {abs(row['ref'] - row['ours']):.2e}", flush=True)
    return row


def markdown(rows, args) -> str:
    lines = [f"| N ({args.maps} {args.dataset}-like maps, interval {args.interval}) | ours s | "
             "ours peak MiB | ours first map read s | reference s | reference peak MiB | "
             "speed-up | same performance |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = "ref_s" in r
        lines.append(
            f"| {r['n']} | {r['ours_s']:.2f} | {r['ours_mib']:.0f} | {r['start_s']} | "
            f"{r['ref_s']:.2f} | {r['ref_mib']:.0f} | {r['ref_s'] / r['ours_s']:.1f}x | "
            f"{'yes' if r['ref'] == r['ours'] else 'NO'} |" if ref else
            f"| {r['n']} | {r['ours_s']:.2f} | {r['ours_mib']:.0f} | {r['start_s']} | - | - | "
            f"- | - |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference_src", default=os.environ.get("WSOLEVALUATION_SRC", ""),
                   help="A checkout of clovaai/wsolevaluation (holds evaluation.py).")
    p.add_argument("--skip_reference", action="store_true", help="Time our tool only.")
    p.add_argument("--dataset", default="CUB", choices=("CUB", "ILSVRC", "OpenImages"))
    p.add_argument("--split", default="val")
    p.add_argument("--n", "--num_maps", dest="n", default="120",
                   help="Comma list of numbers of maps, one tree each.")
    p.add_argument("--reference_n", default="",
                   help="Comma list: the N at which the reference runs too (default: all).")
    p.add_argument("--maps", default="smooth", choices=("smooth", "noisy"))
    p.add_argument("--interval", type=float, default=0.001)
    p.add_argument("--multi_contour_eval", default="true")
    p.add_argument("--multi_iou_eval", default="true")
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", default="", help="Keep the trees under this folder (one per "
                   "case) and reuse them in later runs.")
    p.add_argument("--build_only", action="store_true", help="Only build the trees (--keep).")
    args = p.parse_args()
    if not args.skip_reference and not os.path.isfile(
            os.path.join(args.reference_src, "evaluation.py")):
        sys.exit("--reference_src must point at a checkout of clovaai/wsolevaluation "
                 "(or pass --skip_reference)")
    sizes = _ints(args.n)
    with_reference = set() if args.skip_reference else set(_ints(args.reference_n) or sizes)
    print(f"{args.maps} {args.dataset}-like {args.dtype} maps, interval {args.interval}, "
          f"multi_contour_eval={args.multi_contour_eval}, multi_iou_eval={args.multi_iou_eval};"
          f" load average {os.getloadavg()[0]:.2f} at start", flush=True)
    if args.build_only:
        if not args.keep:
            sys.exit("--build_only needs --keep")
        for n in sizes:
            measure(args, n, None)
        return
    rows = [measure(args, n, n in with_reference) for n in sizes]
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
