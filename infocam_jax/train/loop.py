"""The epoch loop of `trainer.train_single`: loop sizes, this process's training batches, one
epoch of the parallel train step with progress logs and TensorBoard scalars, NaN checks.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from typing import Iterator, Mapping

from absl import logging
import jax
import numpy as np

from infocam_jax import data
from infocam_jax import devices

TRAIN_KEYS = ("image", "label", "labels")


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


def summary_writer(workdir: str):
    """TensorBoard writer under `workdir/tensorboard` on process 0; None elsewhere."""
    if jax.process_index() != 0:
        return None
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    return SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))


def write_scalars(writer, step: int, scalars: Mapping[str, float]) -> None:
    """Writes the finite scalars at `step` (no-op without a writer)."""
    if writer is None:
        return
    for name, value in scalars.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(name, value, step)
    writer.flush()


def train_batches(config, epoch: int, batch_size: int, steps: int) -> Iterator[dict]:
    """This process's shard of epoch `epoch`, exactly `steps` batches of the needed keys."""
    it = data.make_iterator(
        config, "train", training=True, batch_size=batch_size, epoch=epoch,
        seed=int(config.seed), process_index=jax.process_index(),
        process_count=jax.process_count())
    n = 0
    try:
        for batch in itertools.islice(it, steps):
            yield {k: batch[k] for k in TRAIN_KEYS if k in batch}
            n += 1
    finally:
        # Stopping after `steps` batches leaves grain worker processes (data_workers > 0)
        # alive until garbage collection: end them with the epoch.
        close = getattr(it, "close", None)
        if close is not None:
            close()
    if n < steps:
        raise RuntimeError(f"the training iterator of epoch {epoch} yielded {n} batches, "
                           f"expected {steps} (data.steps_per_epoch)")


def fetch_metrics(pending: list[dict]) -> dict[str, float]:
    """Mean over the pending steps of device metrics (already averaged across devices)."""
    # First local replica (the values are identical on all devices after pmean); works when
    # the pmap output spans other processes' devices too.
    host = [devices.unreplicate(m) for m in pending]
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def check_finite(metrics: Mapping[str, float], epoch: int, step: int) -> None:
    loss = metrics.get("loss", 0.0)
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"training loss became {loss} by step {step} (epoch {epoch + 1}); aborting without "
            f"saving this epoch. The last good checkpoint (if any) is kept in the workdir. "
            f"Lower config.optimizer.learning_rate or check the input data.")


def progress_line(epoch, num_epochs, i, steps, step, metrics, lr, images_per_s, eta_s) -> str:
    parts = [f"epoch {epoch + 1}/{num_epochs}", f"step {i}/{steps} ({100.0 * i / steps:.0f}%)",
             f"global step {step}", f"loss {metrics['loss']:.4f}"]
    if "accuracy" in metrics:
        parts.append(f"acc {metrics['accuracy']:.3f}")
    parts += [f"lr {lr:.3g}", f"{images_per_s:.1f} img/s", f"ETA {eta_s:.0f}s"]
    return " | ".join(parts)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Loop sizes of one run: epochs, steps per epoch, global batch, logging / eval periods."""
    num_epochs: int
    steps: int
    global_batch: int
    log_every: int
    eval_every: int

    @classmethod
    def from_config(cls, config, info) -> "Plan":
        global_batch = int(config.batch_size)
        steps = int(data.steps_per_epoch(config, global_batch))
        if config.get("max_steps_per_epoch", 0):
            steps = min(steps, int(config.max_steps_per_epoch))
        if steps < 1:
            raise ValueError(f"no training step per epoch: {info.num_examples['train']} training "
                             f"examples for config.batch_size={global_batch}")
        return cls(num_epochs=int(config.num_epochs), steps=steps, global_batch=global_batch,
                   log_every=max(1, int(config.log_every_steps)),
                   eval_every=int(config.eval_every_epochs))


def train_epoch(config, plan: Plan, epoch: int, p_step, p_state, p_key, schedule, writer):
    """One epoch of `p_step` over this process's shard, logging every `plan.log_every` steps.

    Returns (replicated state, the epoch's mean training loss)."""
    steps, num_local = plan.steps, jax.local_device_count()
    process_batch = plan.global_batch // jax.process_count()
    pending, t0, seen, epoch_start = [], time.time(), 0, time.time()
    epoch_metrics = []
    for i, batch in enumerate(train_batches(config, epoch, process_batch, steps), start=1):
        p_state, metrics = p_step(p_state, devices.shard(batch, num_local), p_key)
        pending.append(metrics)
        seen += plan.global_batch
        step = epoch * steps + i
        if i % plan.log_every == 0 or i == steps:
            m = fetch_metrics(pending)
            check_finite(m, epoch, step)
            epoch_metrics.append((m, len(pending)))
            pending = []
            elapsed = max(time.time() - t0, 1e-9)
            lr = float(schedule(step - 1))
            ips = seen / elapsed
            eta = (time.time() - epoch_start) / i * (steps - i)
            logging.info(progress_line(epoch, plan.num_epochs, i, steps, step, m, lr, ips, eta))
            write_scalars(writer, step, {"train/" + k: v for k, v in m.items()}
                          | {"train/learning_rate": lr, "train/images_per_second": ips})
            t0, seen = time.time(), 0
    total = sum(n for _, n in epoch_metrics)
    return p_state, sum(m["loss"] * n for m, n in epoch_metrics) / total
