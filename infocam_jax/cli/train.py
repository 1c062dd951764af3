"""``infocam-train``: trains and evaluates one experiment.

    infocam-train --config=configs/digits.py --workdir=DIR
    python launch/train.py --config=configs/digits.py --workdir=DIR     (the same, from a checkout)

Any config field can be overridden, e.g. `--config.num_epochs=2 --config.optimizer.learning_rate=0.1`;
`--config=configs/cub_resnet50.py:runlocal` shrinks it to a smoke run (the only smoke switch).
The config is checked once (`infocam_jax.config.validate`) before anything is built or written.
Restarting with the same --workdir resumes from the last finished epoch.

Multi-host: pass --jax_distributed (plus --coordinator_address, --num_processes and --process_id
unless the cluster environment provides them, e.g. SLURM / Cloud TPU) to call
`jax.distributed.initialize()`; every process then runs this same command, reads its own shard
of the data, and only process 0 writes logs and results. The workdir must be on a filesystem
shared by all processes (orbax checkpoints).
"""
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from infocam_jax.models import xla_cpu
from infocam_jax.experiments import training

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Path to an ml_collections config file (configs/*.py[:runlocal]).",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_bool("jax_distributed", False,
                  "Call jax.distributed.initialize() (multi-process / multi-host training). "
                  "Also enabled by the environment variable INFOCAM_JAX_DISTRIBUTED=1.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (jax.distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes (jax.distributed).")
flags.DEFINE_integer("process_id", None, "Index of this process (jax.distributed).")
flags.mark_flags_as_required(["config", "workdir"])


def _maybe_initialize_distributed() -> None:
    wanted = FLAGS.jax_distributed or os.environ.get("INFOCAM_JAX_DISTRIBUTED") == "1"
    if not wanted:
        return
    # CPU processes exchange collectives through gloo; harmless on GPU/TPU backends.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if FLAGS.coordinator_address:
        kwargs["coordinator_address"] = FLAGS.coordinator_address
    if FLAGS.num_processes is not None:
        kwargs["num_processes"] = FLAGS.num_processes
    if FLAGS.process_id is not None:
        kwargs["process_id"] = FLAGS.process_id
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices.",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if "runlocal" in config_flags.get_override_values(FLAGS["config"]):
        raise app.UsageError("--config.runlocal is not a switch: shrink with "
                             "--config=FILE:runlocal (overrides given after it still win)")
    xla_cpu.use_eigen_convolutions()  # before the first computation: XLA reads its flags once
    _maybe_initialize_distributed()
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)
    logging.info("JAX %s: %d process(es), %d device(s): %s", jax.__version__,
                 jax.process_count(), jax.device_count(), jax.devices())
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
    """The ``infocam-train`` command."""
    app.run(main)
