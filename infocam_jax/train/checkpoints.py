"""orbax checkpoints of a training run: the last N epochs plus the best by validation top-1.

Layout in the workdir:
  checkpoints/<epoch>/        last `keep` epochs (`CheckpointManager(max_to_keep=keep)`)
  checkpoints_best/<epoch>/   one checkpoint: the epoch with the highest validation top-1
                              classification accuracy so far (strictly higher replaces it, as
                              the authors' `is_best = acc1 > best_acc1`)
Each checkpoint holds three items: "variables" ({"params", "batch_stats"}), "opt_state" and
"extra" (JSON: epoch, step, val_top1, best_val_top1, label_prior, loss, ...). Checkpoints are
written atomically by orbax, so a run killed mid-save resumes from the previous epoch.
All processes call `save` (orbax synchronises them); only the primary process writes.
"""
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
LATEST_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"


def _manager(directory: str, max_to_keep: int | None, create: bool = True
             ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_names=("variables", "opt_state", "extra"))


def _np_tree(tree: PyTree) -> PyTree:
    return jax.tree.map(np.asarray, tree)


class Checkpointer:
    """Saves and restores one training run's checkpoints (see module docstring)."""

    def __init__(self, workdir: str, keep: int, keep_best: bool = True):
        """Opens (creating) the checkpoint directories of `workdir`; `keep` >= 1 last epochs."""
        if keep < 1:
            raise ValueError(f"config.keep_checkpoints must be >= 1, got {keep}")
        self.latest = _manager(os.path.join(workdir, LATEST_DIR), keep)
        self.best = _manager(os.path.join(workdir, BEST_DIR), 1) if keep_best else None

    def latest_epoch(self) -> int | None:
        """Epoch number of the newest checkpoint, or None when the run has none yet."""
        return self.latest.latest_step()

    def save(self, epoch: int, variables: PyTree, opt_state: PyTree, extra: dict,
             is_best: bool) -> None:
        """Saves the state after `epoch` (1-based count of finished epochs); blocks until written."""
        args = ocp.args.Composite(
            variables=ocp.args.StandardSave(_np_tree(variables)),
            opt_state=ocp.args.StandardSave(_np_tree(opt_state)),
            extra=ocp.args.JsonSave(extra))
        self.latest.save(epoch, args=args)
        self.latest.wait_until_finished()
        if is_best and self.best is not None:
            self.best.save(epoch, args=ocp.args.Composite(
                variables=ocp.args.StandardSave(_np_tree(variables)),
                extra=ocp.args.JsonSave(extra)))
            self.best.wait_until_finished()

    def restore_latest(self, variables_target: PyTree, opt_state_target: PyTree
                       ) -> tuple[PyTree, PyTree, dict]:
        """Restores (variables, opt_state, extra) of the newest epoch into the given structures."""
        epoch = self.latest.latest_step()
        if epoch is None:
            raise FileNotFoundError("no checkpoint to resume from")
        restored = self.latest.restore(epoch, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(_np_tree(variables_target)),
            opt_state=ocp.args.StandardRestore(_np_tree(opt_state_target)),
            extra=ocp.args.JsonRestore()))
        return restored["variables"], restored["opt_state"], dict(restored["extra"])

    def close(self) -> None:
        self.latest.close()
        if self.best is not None:
            self.best.close()


def restore_variables_from(workdir: str, which: str = "best") -> tuple[dict, dict]:
    """Reads `(variables, extra)` of the best or latest checkpoint of `workdir`.

    "best" falls back to the latest checkpoint when the run kept no best one (no validation
    was run). Raises FileNotFoundError naming the directory when there is no checkpoint.
    """
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    candidates = [BEST_DIR, LATEST_DIR] if which == "best" else [LATEST_DIR]
    for sub in candidates:
        directory = os.path.join(workdir, sub)
        if not os.path.isdir(directory):
            continue
        manager = _manager(directory, None, create=False)
        try:
            epoch = manager.latest_step()
            if epoch is None:
                continue
            restored = manager.restore(epoch, args=ocp.args.Composite(
                variables=ocp.args.StandardRestore(), extra=ocp.args.JsonRestore()))
            variables = _np_tree(dict(restored["variables"]))
            return variables, dict(restored["extra"])
        finally:
            manager.close()
    raise FileNotFoundError(
        f"no {which!r} checkpoint under {os.path.abspath(workdir)} (looked in {candidates})")
