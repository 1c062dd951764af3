"""Mutation check of augment.py / train_methods.py: each mutant must make its tests fail.

    python tools/mutation_check_methods.py [index ...]

Each mutant is written into the source, the named test file runs, and the source is restored
(even on failure). Prints KILLED (tests failed, good) or SURVIVED per mutant.
"""
import pathlib
import subprocess
import sys

repo = pathlib.Path(__file__).resolve().parents[1]
MUTANTS = [
  ("has: swap row/col cell index", "infocam_jax/augment.py",
   "pixel = hide[:, rows[:, None], cols[None, :]]", "pixel = hide[:, cols[None, :], rows[:, None]]", "tests/test_augment.py"),
  ("has: cell size off by one", "infocam_jax/augment.py",
   "rows = jnp.arange(h) // grid_size", "rows = jnp.arange(h) // (grid_size + 1)", "tests/test_augment.py"),
  ("cutmix: cut sizes from swapped axes", "infocam_jax/augment.py",
   "cut_r = jnp.floor(height * cut_rat)", "cut_r = jnp.floor(width * cut_rat)", "tests/test_augment.py"),
  ("cutmix: centre row/col swapped", "infocam_jax/augment.py",
   "r1 = jnp.clip(row - cut_r // 2, 0, height)", "r1 = jnp.clip(col - cut_r // 2, 0, height)", "tests/test_augment.py"),
  ("cutmix: clip to H-1 (off by one)", "infocam_jax/augment.py",
   "r2 = jnp.clip(row + cut_r // 2, 0, height)", "r2 = jnp.clip(row + cut_r // 2, 0, height - 1)", "tests/test_augment.py"),
  ("cutmix: box end inclusive", "infocam_jax/augment.py",
   "(rows >= r1) & (rows < r2)", "(rows >= r1) & (rows <= r2)", "tests/test_augment.py"),
  ("cutmix: lambda = lam0 (not recomputed from the clipped box)", "infocam_jax/augment.py",
   "kept = (h * w - (r2 - r1) * (c2 - c1)).astype(jnp.float32)",
   "kept = h * w * draw.lam0", "tests/test_augment.py"),
  ("cutmix: round instead of int()", "infocam_jax/augment.py",
   "cut_c = jnp.floor(width * cut_rat)", "cut_c = jnp.round(width * cut_rat)", "tests/test_augment.py"),
  ("cutmix loss: lam and 1-lam swapped", "infocam_jax/augment.py",
   "return (lam * loss_fn(logits, batch)", "return ((1.0 - lam) * loss_fn(logits, batch)", "tests/test_augment.py"),
  ("cutmix: targets not permuted", "infocam_jax/augment.py",
   "(v[perm] if k in TARGET_KEYS else v)", "(v if k in TARGET_KEYS else v)", "tests/test_augment.py"),
  ("step: HaS transform dropped", "infocam_jax/train_methods.py",
   "return dict(batch, image=images), None", "return batch, None", "tests/test_train_methods.py"),
  ("step: CutMix loss unmixed", "infocam_jax/train_methods.py",
   "return augment.cutmix_loss(loss_fn, main_logits(outputs), batch, perm, lam)",
   "return loss_fn(main_logits(outputs), batch)", "tests/test_train_methods.py"),
  ("step: HaS drawn from the ADL key", "infocam_jax/train_methods.py",
   "key = jax.random.fold_in(step_key, AUGMENT_STREAM)\n            images = augment.hide_and_seek",
   "key = jax.random.fold_in(step_key, device_index)\n            images = augment.hide_and_seek", "tests/test_train_methods.py"),
]
sel = sys.argv[1:] 
for i, (name, path, old, new, test) in enumerate(MUTANTS):
    if sel and str(i) not in sel: continue
    f = repo / path
    src = f.read_text()
    assert src.count(old) == 1, (name, src.count(old))
    f.write_text(src.replace(old, new))
    try:
        k = "-k" ; kexpr = "step or has_" if "train_methods" in test else ""
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test]
        if kexpr: cmd += [k, kexpr]
        p = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"})
        last = [l for l in p.stdout.splitlines() if l.strip()][-1]
        failed = [l for l in p.stdout.splitlines() if l.startswith("FAILED")]
        print(f"[{i}] {name}: rc={p.returncode} {'KILLED' if p.returncode else 'SURVIVED'} | {last} | {failed[:1]}", flush=True)
    finally:
        f.write_text(src)
