"""Training of one model: data-parallel SGD over every device, orbax checkpoints, best epoch.

`train_single(config, workdir, checked)` (called by `experiments.training.train_and_evaluate`,
which validates the config once: `infocam_jax.config.validate` -> `Checked`) trains
`config.model` on `config.dataset` with the authors' optimiser (`optim.py`), runs the per-epoch
evaluators (`evaluation.evaluators`; by default classification only) on validation after every
`eval_every_epochs` epochs, keeps the last `keep_checkpoints` epochs and the best one by
validation top-1 classification accuracy (`checkpoints.py`), then restores the best epoch, runs the final evaluators (by default the
full protocol: CAM / infoCAM / infoCAM+, the whole threshold grid) on the test split, writes
`results.json` / `results.md` and prints the table.

Parallelism: `jax.pmap` of the per-device `train.state.train_step` over all devices of all
processes (axis "batch"); each process reads its own shard of the data
(`data.make_iterator(..., process_index, process_count)`) and splits it over its local devices.
ResNet50's BatchNorm is synchronised across devices (the model's `axis_name`), so the result does
not depend on the device count; running statistics are also `pmean`-ed.

Determinism and resume: the data order is a function of (seed, epoch) and the ADL key of
(seed, step, device), and a checkpoint is written at the end of every epoch; a run killed at any
point and restarted with the same workdir continues from the last finished epoch and reaches the
same state as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import logging as std_logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from infocam_jax import data
from infocam_jax import devices
from infocam_jax import losses
from infocam_jax import methods
from infocam_jax import models
from infocam_jax.evaluation import evaluators, run_tables
from infocam_jax.evaluation.settings import EvalSettings
from infocam_jax.models import convert
from infocam_jax.train import checkpoints
from infocam_jax.train import optim
from infocam_jax.train import loop
from infocam_jax.train import state as ts
from infocam_jax.train.loop import NonFiniteLossError

PyTree = Any
__all__ = ["NonFiniteLossError", "create_model", "make_loss_fn", "restore_variables",
           "train_single", "usable_prior"]


# ----------------------------------------------------------------------------- set-up

def _is_main() -> bool:
    return jax.process_index() == 0


def _quiet_orbax_info_logs() -> None:
    """Drops orbax's INFO chatter (several lines per save/restore) from the absl log."""

    def keep(record) -> bool:
        return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname

    logger = logging.get_absl_logger()
    if not any(getattr(f, "__name__", "") == "keep" for f in logger.filters):
        logger.addFilter(keep)


def create_model(config: ml_collections.ConfigDict):
    """`methods.create_model(config.model, config.num_classes, **methods.model_options(config))`
    (config.model_options plus the method and its options), BN synced,
    computing in `config.dtype` ("float32" | "bfloat16"; model_options may not contradict it).

    The config is validated by the caller (`infocam_jax.config.validate`, at the edge).

    Raises:
      ValueError naming the field for an unknown backbone or method, a method the backbone does
      not support, or an option out of range (nothing is built or written)."""
    options = methods.model_options(config)
    options.setdefault("axis_name", ts.AXIS_NAME)
    dtype = str(config.get("dtype", "float32"))
    if str(options.setdefault("dtype", dtype)) != dtype:
        raise ValueError(f"config.model_options.dtype={options['dtype']!r} contradicts "
                         f"config.dtype={dtype!r}: set config.dtype only")
    try:
        return methods.create_model(config.model, int(config.num_classes), **options)
    except ValueError as e:
        raise ValueError(f"config.model={config.model!r}, config.method="
                         f"{methods.method_of(config)!r}: {e}") from e


def make_classification_loss(config: ml_collections.ConfigDict, label_prior: np.ndarray | None):
    """(logits [b, M], targets, weights=None) -> weighted mean `config.loss` (priors bound).

    The classification term handed to a method's loss (`Method.loss`) and, through
    :func:`make_loss_fn`, the loss of every other method.
    """
    name = str(config.loss)
    priors = None
    if name.startswith("pc_"):
        if label_prior is None:
            raise ValueError(f"loss {name!r} needs the training label prior")
        priors = jnp.asarray(label_prior, jnp.float32)

    def classification_loss(logits, targets, weights=None):
        return losses.loss(name, logits, targets, priors, weights)

    return classification_loss


def make_loss_fn(config: ml_collections.ConfigDict, label_prior: np.ndarray | None):
    """(logits [b, M], batch) -> mean loss, per `config.loss` (priors for the PC losses).

    Single-label losses read `batch["label"]` int32 [b]; multi-label ones `batch["labels"]`
    float32 [b, M]. `label_prior` is float [M] (training-set frequencies); the loss and
    `multi_label` were checked together at the edge (`infocam_jax.config.validate`).
    """
    multi = bool(config.multi_label)
    classification_loss = make_classification_loss(config, label_prior)
    target_key = "labels" if multi else "label"

    def loss_fn(logits, batch):
        return classification_loss(logits, batch[target_key])

    return loss_fn


def usable_prior(label_prior, num_train: int, multi_label: bool) -> np.ndarray:
    """The training-set prior, with labels never (or, multi-label, always) seen moved off 0 / 1.

    The PC losses divide by the prior (PC-sigmoid also by ``1 - π``), so a label absent from a
    small training set (a smoke run, a rare class) would make them undefined. Such priors are
    clipped to half an example, ``[0.5 / N, 1 - 0.5 / N]`` (``[0.5 / N, ∞)`` single-label), with a
    warning naming the labels; priors already inside the range are returned unchanged.

    Args:
      label_prior: float ``[M]`` class frequencies (single-label) or per-label presence rates.
      num_train: ``N``, the number of training examples the prior was counted on.
      multi_label: whether ``label_prior`` holds per-label presence rates.

    Returns:
      float64 ``[M]``.
    """
    prior = np.asarray(label_prior, np.float64)
    floor = 0.5 / max(int(num_train), 1)
    high = 1.0 - floor if multi_label else np.inf
    clipped = np.clip(prior, floor, high)
    moved = np.flatnonzero(clipped != prior)
    if moved.size:
        logging.warning("label prior of labels %s is %s on %d training examples: clipped to "
                        "%s (half an example) so the PC losses stay finite", moved.tolist(),
                        prior[moved].tolist(), num_train, clipped[moved].tolist())
    return clipped


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _init_variables(config, model, image_shape) -> dict:
    variables = ts.init_variables(model, jax.random.PRNGKey(int(config.seed)), image_shape)
    if config.pretrained:
        skip = ("head", "conv6") if config.model == "vgg16_gap" else ("head",)
        pretrained = convert.load_variables(str(config.pretrained))
        try:
            merged = convert.merge_pretrained(variables, pretrained, skip)
        except ValueError as e:
            raise ValueError(f"config.pretrained={str(config.pretrained)!r}: {e}") from e
        variables = jax.tree.map(np.asarray, merged)
        logging.info("Loaded pretrained weights from %s (kept fresh: %s)", config.pretrained, skip)
    return variables


# ----------------------------------------------------------------------------- loops

def _resume(ckpt, state, config, workdir: str):
    """(state, start_epoch, best_val, best_epoch) from the workdir's latest checkpoint, or the
    fresh `state` at epoch 0; raises ValueError when the workdir holds another loss / model."""
    if ckpt.latest_epoch() is None:
        return state, 0, -math.inf, 0
    restored_vars, opt_state, extra = ckpt.restore_latest(state.variables, state.opt_state)
    for key, want in (("loss", config.loss), ("model", config.model),
                      ("method", methods.method_of(config))):
        if extra.get(key, want) != want:
            raise ValueError(f"{workdir} holds a run with {key}={extra[key]!r}, but "
                             f"config.{key}={want!r}: use another --workdir")
    state = ts.TrainState(step=np.asarray(extra["step"], np.int32),
                          params=restored_vars["params"],
                          batch_stats=dict(restored_vars.get("batch_stats", {})),
                          opt_state=opt_state)
    start_epoch = int(extra["epoch"])
    best_val = extra.get("best_val_accuracy")
    best_val = -math.inf if best_val is None else float(best_val)
    logging.info("Resumed from %s at epoch %d (step %d).", workdir, start_epoch, extra["step"])
    return state, start_epoch, best_val, int(extra.get("best_epoch", 0))


def _batches_of(config) -> Callable[[str], Any]:
    """``split -> iterator`` of this process's eval batches (``max_eval_batches`` applied by
    the evaluators)."""

    def batches(split: str):
        return data.make_iterator(
            config, split, training=False,
            batch_size=int(config.eval_batch_size) // jax.process_count(),
            process_index=jax.process_index(), process_count=jax.process_count())
    return batches


def _run_evaluators(config, model, variables, evals, split: str) -> dict[str, dict[str, float]]:
    return evaluators.run_all(evals, model, variables, _batches_of(config), report_split=split,
                              num_devices=jax.local_device_count(),
                              max_batches=int(config.get("max_eval_batches", 0)) or None)


def _validate(config, model, variables, plan: loop.Plan, epoch: int, train_loss: float,
              best: tuple[float, int], writer, evals):
    """The per-epoch evaluators (``every_epoch``) on validation after `epoch` when due; model
    selection reads their `accuracy` (``evaluators.selection_accuracy``).

    Returns (val_acc or None, is_best, (best_val, best_epoch)) with the best updated."""
    best_val, best_epoch = best
    if plan.eval_every <= 0 or ((epoch + 1) % plan.eval_every and epoch + 1 != plan.num_epochs):
        return None, False, best
    t_eval = time.time()
    val = _run_evaluators(config, model, variables, [e for e in evals if e.every_epoch],
                          "validation")
    val_acc = evaluators.selection_accuracy(evals, val)
    is_best = math.isfinite(val_acc) and val_acc > best_val
    if is_best:
        best_val, best_epoch = val_acc, epoch + 1
    logging.info("epoch %d/%d: train loss %.4f, validation accuracy %.4f%s (%.1fs)",
                 epoch + 1, plan.num_epochs, train_loss, val_acc,
                 " (best)" if is_best else f" (best {best_val:.4f} at epoch {best_epoch})",
                 time.time() - t_eval)
    loop.write_scalars(writer, (epoch + 1) * plan.steps,
                       {f"{name}/{k}": v for name, res in val.items() for k, v in res.items()})
    return val_acc, is_best, (best_val, best_epoch)


@dataclasses.dataclass(frozen=True)
class Checked:
    """What ``infocam_jax.config.validate`` hands to the layers below: typed pieces, not the ConfigDict.

    Attributes:
      settings: the config's own evaluation protocol (``EvalSettings.from_config``, no
        evaluator's overrides): what tables state as their reading.
      evals: the evaluators of ``config.evals`` (``evaluation.evaluators``), in their order.
      method: the WSOL method (``methods.Method``) of ``config.method``.
      method_options: its options (the method's frozen options dataclass).
    """
    settings: EvalSettings
    evals: tuple
    method: methods.Method
    method_options: Any


def run_title(config, epoch) -> str:
    """`dataset / model [+ method] / loss (epoch e)`: the title of a run's tables."""
    method = str(config.get("method", "cam") or "cam")
    model_name = config.model if method == "cam" else f"{config.model} + {method}"
    return f"{config.dataset} / {model_name} / {config.loss} (epoch {int(epoch)})"


def _test_best(config, model, workdir: str, writer, checked: Checked,
               show: bool = True) -> dict[str, float]:
    """Restores the best epoch, runs the final evaluators on the test split, writes and (with
    ``show``) prints the table (its reading: ``checked.settings``)."""
    variables, extra = checkpoints.restore_variables_from(workdir, "best")
    logging.info("Evaluating epoch %d (validation accuracy %s) on the test split.",
                 extra["epoch"], extra.get("val_accuracy"))
    final = [e for e in checked.evals if e.final]
    results = evaluators.flat_results(final, _run_evaluators(config, model, variables, final,
                                                             "test"))
    results["epoch"] = float(extra["epoch"])
    if _is_main():
        title = run_title(config, extra["epoch"])
        run_tables.write_results(results, workdir, title=title, settings=checked.settings)
        loop.write_scalars(writer, int(extra["step"]), {"test/" + k: v for k, v in results.items()})
        table = run_tables.format_table(results, checked.settings)
        logging.info("Test results of %s written to %s (results.json, results.md).", title,
                     workdir)
        if show:
            print(f"\n## {title}\n\n{table}", flush=True)
    return results


def _checkpoint_extra(config, plan: loop.Plan, epoch: int, train_loss: float, val_acc,
                      best_val: float, best_epoch: int, label_prior) -> dict:
    """What is stored beside the weights of `epoch` (see `restore_variables`)."""
    return {
        "epoch": epoch + 1, "step": (epoch + 1) * plan.steps, "train_loss": train_loss,
        "val_accuracy": val_acc,
        "best_val_accuracy": None if best_val == -math.inf else best_val,
        "best_epoch": best_epoch, "label_prior": label_prior.tolist(),
        "loss": str(config.loss), "model": str(config.model),
        "method": methods.method_of(config),
        "num_classes": int(config.num_classes), "dataset": str(config.dataset),
    }


def train_single(config: ml_collections.ConfigDict, workdir: str,
                 checked: Checked, *, show: bool = True) -> dict[str, float]:
    """Trains one model (one loss) in `workdir`; returns its test results. See module doc.

    Args:
      config: a config checked by `infocam_jax.config.validate` (`train_and_evaluate` does).
      workdir: output directory.
      checked: what `validate` returned (its protocol and evaluators).
      show: print the test table (a heads run with `eval_readings` prints its own instead).
    """
    _quiet_orbax_info_logs()
    # The backbone x method pair is checked here, still before the workdir is made.
    model = create_model(config)
    info = data.get_info(config)
    label_prior = usable_prior(info.label_prior, int(info.num_examples["train"]),
                               bool(config.multi_label))
    image_shape = tuple(int(s) for s in info.image_shape)
    loss_fn = make_loss_fn(config, label_prior)
    wsol = checked.method
    method = wsol.train_step(checked.method_options, loss_fn,
                             make_classification_loss(config, label_prior))
    plan = loop.Plan.from_config(config, info)
    os.makedirs(workdir, exist_ok=True)

    variables = _init_variables(config, model, image_shape)
    mask = models.new_layer_mask(config.model, variables["params"], layout=wsol.layout)
    tx, schedule = optim.create_optimizer(config.optimizer, plan.steps, mask)
    state = ts.create_train_state(variables, tx)

    ckpt = checkpoints.Checkpointer(workdir, int(config.keep_checkpoints),
                                      keep_best=bool(config.get("checkpoint_best", True)))
    state, start_epoch, best_val, best_epoch = _resume(ckpt, state, config, workdir)
    # Written only once the workdir is known to hold this run (or none), so a rejected config
    # never replaces the run's own config.json.
    if _is_main():
        _write_config(config, workdir)
    writer = loop.summary_writer(workdir)

    p_step = ts.parallelize(lambda s, b, k: ts.train_step(
        s, b, k, model=model, tx=tx, loss_fn=loss_fn, multi_label=bool(config.multi_label),
        method=method))
    p_state = devices.replicate(state)
    p_key = devices.replicate(jax.random.PRNGKey(int(config.seed) + 1))
    logging.info("Training %s (method %s, %s loss) on %s: %d epochs x %d steps, global batch "
                 "%d over %d device(s) in %d process(es).", config.model,
                 wsol.name, config.loss, config.dataset, plan.num_epochs,
                 plan.steps, plan.global_batch, jax.device_count(), jax.process_count())

    for epoch in range(start_epoch, plan.num_epochs):
        p_state, train_loss = loop.train_epoch(config, plan, epoch, p_step, p_state, p_key,
                                           schedule, writer)
        host_state = devices.unreplicate(p_state)
        val_acc, is_best, (best_val, best_epoch) = _validate(
            config, model, host_state.variables, plan, epoch, train_loss, (best_val, best_epoch),
            writer, checked.evals)
        extra = _checkpoint_extra(config, plan, epoch, train_loss, val_acc, best_val,
                                  best_epoch, label_prior)
        ckpt.save(epoch + 1, host_state.variables, host_state.opt_state, extra, is_best)
    ckpt.close()

    results = _test_best(config, model, workdir, writer, checked, show)
    if writer is not None:
        writer.close()
    return results


def restore_variables(config: ml_collections.ConfigDict, workdir: str, which: str = "best"
                      ) -> tuple[dict, dict]:
    """Variables of a finished or running training, for evaluation / visualisation.

    Args:
      config: the run's config; when it lists `heads` and `workdir` has no checkpoints of its
        own, the sub-workdir of `config.loss` is used.
      workdir: the run's workdir.
      which: "best" (best validation top-1; falls back to latest) or "latest".

    Returns:
      (variables {"params", "batch_stats"?} of NumPy arrays, extra) with extra holding
      "label_prior" (list, [M]), "epoch", "step", "val_accuracy", "best_val_accuracy", "loss".
    """
    if (config.get("heads") and not os.path.isdir(os.path.join(workdir, checkpoints.LATEST_DIR))
            and os.path.isdir(os.path.join(workdir, str(config.loss)))):
        workdir = os.path.join(workdir, str(config.loss))
    _quiet_orbax_info_logs()
    variables, extra = checkpoints.restore_variables_from(workdir, which)
    if not variables.get("batch_stats"):
        variables.pop("batch_stats", None)
    return variables, extra
