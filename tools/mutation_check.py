"""The mutation-check runner: each mutant must make the tests that guard it fail.

    python tools/mutation_check_methods.py [index ...]     # augment / train step / zoo parity
    python tools/mutation_check_inception.py [index ...]   # InceptionV3 vs the reference
    python tools/mutation_check_posthoc.py [index ...]     # the post-hoc maps

Those scripts hold their mutants as :class:`Mutant` rows and call :func:`main`. Each mutant is
written into its source file, its tests run (``-x``: they stop at the first failure), and the
source is restored, even on failure. Prints KILLED (the tests failed, good) or SURVIVED per
mutant with the first failing test; the exit code is the number of survivors (at most 1).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One wrong wiring: ``old`` (occurring once in ``path``) becomes ``new``; ``tests`` are
    pytest arguments (files, node ids, ``-k`` expressions) that must then fail."""
    name: str
    path: str
    old: str
    new: str
    tests: tuple


def run(index: int, mutant: Mutant) -> bool:
    """Applies one mutant, runs its tests, restores the source; True if it was killed."""
    path = REPO / mutant.path
    src = path.read_text()
    if src.count(mutant.old) != 1:
        raise SystemExit(f"[{index}] {mutant.name}: the original text occurs "
                         f"{src.count(mutant.old)} times in {mutant.path} (expected once); "
                         "update the mutant")
    path.write_text(src.replace(mutant.old, mutant.new))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
             *mutant.tests], cwd=REPO, capture_output=True, text=True, check=False,
            env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
    finally:
        path.write_text(src)
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    failed = [l for l in lines if l.startswith("FAILED")]
    killed = proc.returncode != 0
    print(f"[{index}] {mutant.name}: {'KILLED' if killed else 'SURVIVED'} | "
          f"{lines[-1] if lines else ''} | {failed[0] if failed else ''}", flush=True)
    return killed


def main(mutants, argv=None) -> int:
    """Runs the mutants whose indices are in ``argv`` (all when empty)."""
    selection = sys.argv[1:] if argv is None else argv
    survivors = [i for i, m in enumerate(mutants)
                 if (not selection or str(i) in selection) and not run(i, m)]
    print(f"{len(survivors)} survived: {survivors}")
    return min(len(survivors), 1)
