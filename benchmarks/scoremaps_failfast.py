r"""Benchmark: how fast ``infocam-scoremaps`` rejects a bad tree, and what its pre-pass costs.

Before it evaluates any map, the command cross-checks the metadata files and reads the ``.npy``
header (only the header) of every listed map
(:func:`infocam_jax.evaluation.scoremaps.read.check_scoremap_files`). On a generated CUB-like
tree of ``--n`` smooth 224x224 float32 maps (``build_tree`` of
``benchmarks/scoremaps_vs_reference.py``: blobs on a 7/14/28 grid, bicubic-upsampled, as real
CAMs are; written once under ``--root`` and reused), this script measures, as whole processes
(``python -c`` running the command's ``main``, imports included), side by side:

(a) time from start to the error (exit 2) when the LAST map is missing, and when it is corrupt
    (its file cut inside the ``.npy`` header); the bound is 2 s;
(b) a clean full run with the pre-pass and without it (the pre-pass replaced by a read of the
    first map's header only, the former behaviour), interleaved, ``--repeats`` each, medians;
    and the pre-pass alone (in this process, warm page cache like the runs), as a fraction of
    the clean run; the bound is 5 %.

The load average (``os.getloadavg``) is printed before and after: on a shared machine the
figures move with it, which is why each ratio is taken between runs measured side by side.

  python benchmarks/scoremaps_failfast.py                     # 6000 maps under /tmp
  python benchmarks/scoremaps_failfast.py --n=5794 --repeats=5
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]  # this checkout's package
import scoremaps_vs_reference as tree_lib  # noqa: E402  pylint: disable=wrong-import-position

from infocam_jax.data.wsol_metadata import read_metadata  # noqa: E402
from infocam_jax.evaluation.scoremaps import read  # noqa: E402

_RUN = "import sys; from infocam_jax.cli.scoremaps import main; sys.exit(main(sys.argv[1:]))"
_IMPORT_ONLY = "from infocam_jax.cli import scoremaps"
_RUN_WITHOUT_PREPASS = (
    "import sys; from infocam_jax.evaluation.scoremaps import read, score; "
    "score.check_scoremap_files = lambda paths, where=None: read.npy_header(paths[0])[0]; "
    + _RUN)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} CPUs)"


def tree(root: pathlib.Path, n: int) -> tuple:
    """(flags, map paths) of the tree under ``root``, built when absent or of another size."""
    ids_file = root / "metadata" / "CUB" / "val" / "image_ids.txt"
    if not ids_file.is_file() or len(ids_file.read_text().splitlines()) != n:
        start = time.perf_counter()
        tree_lib.build_tree(root, "CUB", "val", n)
        print(f"built {n} maps under {root} in {time.perf_counter() - start:.1f} s")
    md = read_metadata(str(ids_file.parent))
    paths = [read.scoremap_path(str(root / "scoremaps"), i) for i in md.image_ids]
    return paths


def flags(root: pathlib.Path, args) -> list:
    return [f"--scoremap_root={root / 'scoremaps'}", f"--metadata_root={root / 'metadata'}",
            "--dataset_name=CUB", "--split=val", f"--cam_curve_interval={args.interval}",
            f"--multi_contour_eval={args.multi_contour_eval}",
            f"--multi_iou_eval={args.multi_iou_eval}", "--quiet"]


def run(code: str, argv: list, cpu: bool = False) -> tuple:
    """(wall seconds, exit code, stderr) of ``python -c code argv``; with ``cpu``, the wall
    seconds are followed by the child's CPU seconds (user + system, ``os.wait4``), which a
    busy machine disturbs far less than the wall time."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err.seek(0)
        text = err.read()
    code = os.waitstatus_to_exitcode(status)
    if cpu:
        return wall, usage.ru_utime + usage.ru_stime, code, text
    return wall, code, text


def time_to_error(path: pathlib.Path, case: str, argv: list, repeats: int) -> list:
    """Wall seconds to exit 2 with the last map ``case`` (missing / corrupt header)."""
    blob = path.read_bytes()
    try:
        path.unlink()
        if case == "corrupt":
            path.write_bytes(blob[:40])  # cut inside the 128-byte header
        times = []
        for _ in range(repeats):
            seconds, code, err = run(_RUN, argv)
            if code != 2 or str(path) not in err:
                sys.exit(f"{case}: expected exit 2 naming {path}, got {code}: {err}")
            times.append(seconds)
        print(f"  {case:8s} last map: exit 2 after {statistics.median(times):.3f} s "
              f"(median of {repeats}; max {max(times):.3f} s): {err.strip()[:160]}")
        return times
    finally:
        path.write_bytes(blob)


def clean_runs(paths: list, argv: list, repeats: int) -> dict:
    """Interleaved clean runs with and without the pre-pass, and the pre-pass alone."""
    out = {"with": [], "without": [], "with_cpu": [], "without_cpu": [], "prepass": []}
    for _ in range(repeats):
        for name, code in (("with", _RUN), ("without", _RUN_WITHOUT_PREPASS)):
            seconds, cpu, status, err = run(code, argv, cpu=True)
            if status != 0:
                sys.exit(f"clean run {name} failed ({status}): {err}")
            out[name].append(seconds)
            out[f"{name}_cpu"].append(cpu)
        start = time.perf_counter()
        read.check_scoremap_files(paths)
        out["prepass"].append(time.perf_counter() - start)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="/tmp/infocam_scoremaps_failfast",
                   help="Where the tree is written once and reused (outside the repo).")
    p.add_argument("--n", type=int, default=6000, help="Number of maps.")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--interval", default="0.01", help="--cam_curve_interval of the runs.")
    p.add_argument("--multi_contour_eval", default="true")
    p.add_argument("--multi_iou_eval", default="true")
    args = p.parse_args()
    root = pathlib.Path(args.root)
    paths = tree(root, args.n)
    argv = flags(root, args)
    print(f"{args.n} maps of {np.load(paths[0]).shape}, interval {args.interval}, "
          f"multi_contour_eval={args.multi_contour_eval}, multi_iou_eval={args.multi_iou_eval}")
    print(f"before: {load()}")
    print("(a) time from start to the error (bound 2 s):")
    imports = [run(_IMPORT_ONLY, [])[0] for _ in range(args.repeats)]
    print(f"  for scale, start-up alone (python + the command's imports, no work): "
          f"{statistics.median(imports):.3f} s (median of {args.repeats})")
    errors = {case: time_to_error(pathlib.Path(paths[-1]), case, argv, args.repeats)
              for case in ("missing", "corrupt")}
    print("(b) clean full run, with and without the pre-pass, interleaved (bound 5 %):")
    t = clean_runs(paths, argv, args.repeats)
    med = {k: statistics.median(v) for k, v in t.items()}
    for k in ("with", "without"):
        print(f"  {k:8s} pre-pass: wall {med[k]:7.2f} s (runs "
              f"{', '.join(f'{v:.2f}' for v in t[k])}), CPU {med[k + '_cpu']:7.2f} s (runs "
              f"{', '.join(f'{v:.2f}' for v in t[k + '_cpu'])})")
    print(f"  pre-pass alone: {med['prepass']:.3f} s (runs "
          f"{', '.join(f'{v:.3f}' for v in t['prepass'])}) = "
          f"{100 * med['prepass'] / med['with']:.2f} % of the clean run")
    for unit, a, b in (("wall", "with", "without"), ("CPU", "with_cpu", "without_cpu")):
        low = min(t[a]) / min(t[b])
        print(f"  with / without ({unit}): medians {med[a] / med[b]:.4f} "
              f"({100 * (med[a] / med[b] - 1):+.2f} %), minima {low:.4f} "
              f"({100 * (low - 1):+.2f} %); run-to-run noise included")
    print(f"after: {load()}")
    worst = max(max(v) for v in errors.values())
    print(f"summary: time to error <= {worst:.3f} s (bound 2 s: "
          f"{'ok' if worst < 2 else 'OVER'}); pre-pass = "
          f"{100 * med['prepass'] / med['with']:.2f} % of a clean run (bound 5 %: "
          f"{'ok' if med['prepass'] / med['with'] <= 0.05 else 'OVER'})")


if __name__ == "__main__":
    main()
