r"""``infocam-evaluate-readings``: reads the saved runs of ``infocam-reproduce`` under both
normalisations of the maps.

For every ``<workdir>/<head>/seed<k>`` run, restores the best checkpoint (selected on validation
top-1 during training) and evaluates validation and test with
``evaluation.thresholds.evaluate_readings``: min-max (WSOL protocol) and max-normalised
(``max(m, 0) / max(m)``, the paper's §3.1), each at the fixed ``config.cam_threshold``, at the
threshold chosen on validation, and at the best threshold on test (MaxBoxAcc-style,
optimistic). Nothing is retrained. Writes ``<run>/readings.json`` per run and
``<workdir>/readings_summary.{md,json}`` (mean ± sample std over seeds).

  infocam-evaluate-readings --config=configs/multi_mnist.py \
      --workdir=/work/runs/multi_mnist_v3 --heads=sigmoid,pc_sigmoid --seeds=0,1,2 \
      --config.num_test_examples=2000 --config.num_train_examples=10000 \
      --config.num_box_thresholds=20

Pass the same data ``--config.*`` overrides as the training invocation (they select the
canvases); the training-only ones (epochs, learning rate) do not matter here.
"""
from absl import app, flags
from ml_collections import config_flags

from infocam_jax.experiments import saved_runs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.",
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "infocam-reproduce output root.")
_HEADS = flags.DEFINE_list("heads", None, "Heads (default: config.heads or config.loss).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_MAP_KINDS = flags.DEFINE_list("map_kinds", None, "Map kinds (default: by label type).")
_FORCE = flags.DEFINE_bool("force", False, "Re-read runs that already have readings.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if _MAP_KINDS.value:
        config.map_kinds = tuple(_MAP_KINDS.value)
    print(saved_runs.read_runs(config, _WORKDIR.value, heads=_HEADS.value,
                               seeds=[int(s) for s in _SEEDS.value], force=_FORCE.value,
                               log=lambda line: print(line, flush=True)))


def run() -> None:
    """The ``infocam-evaluate-readings`` command."""
    app.run(main)
