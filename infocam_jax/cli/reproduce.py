r"""``infocam-reproduce``: runs one experiment config over several seeds (and heads), evaluates
every trained model at several infoCAM region sizes, and aggregates mean ± std over seeds into
Markdown and JSON.

  infocam-reproduce --config=configs/multi_mnist.py --workdir=workdirs/repro/multi_mnist \
      --seeds=0,1,2 --region_sizes=1,2,3,4,5
  infocam-reproduce --config=configs/cluttered_mnist.py \
      --workdir=workdirs/repro/cluttered_mnist --seeds=0,1,2

A config listing ``methods`` (configs/methods_cluttered.py) runs the method table instead
(``infocam_jax.experiments.methods_table.reproduce_methods``; the flags it does not read are
refused). Otherwise the work is ``infocam_jax.experiments.reproduction.reproduce`` (layout,
protocol and reports are described there); ``--config.normalize=max`` reads the maps the
paper's way.
"""
from absl import app, flags
from ml_collections import config_flags

from infocam_jax.experiments import methods_table, reproduction
from infocam_jax.models import xla_cpu

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Output root: <workdir>/<head>/seed<k>, summary.*.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")
flags.DEFINE_list("region_sizes", None,
                  "infoCAM region sizes to evaluate (config.region_size always included).")
flags.DEFINE_list("map_kinds", None, "Map kinds (default: by label type).")
flags.DEFINE_integer("baseline_draws", 10, "Random boxes per ground-truth box.")
flags.DEFINE_string("figure", "", "PNG path of a Figure-4-style grid, or of the method "
                    "study's maps for a config listing methods ('' = none).")
flags.DEFINE_integer("figure_digit", 0, "Digit whose maps the multi-label figure shows.")
flags.DEFINE_bool("reevaluate", False, "Re-evaluate runs that already have results.")
flags.DEFINE_list("heads", None, "Losses to train (default: config.heads or config.loss).")
flags.DEFINE_list("eval_splits", list(reproduction.SPLITS), "Splits of the full evaluation.")
flags.DEFINE_list("cam_thresholds", None,
                  "Score thresholds of an extra localisation sweep (selected on validation).")
flags.DEFINE_string("init_from", "", "Directory of seed<k>/ runs to start seed k from.")
flags.DEFINE_bool("fan_in_init", False,
                  "Start from He-normal fan-in conv weights (reproduction.write_fan_in_init).")
flags.mark_flags_as_required(["config", "workdir"])


# What the method table (a config listing `methods`) does not read: refused there, not ignored.
NOT_FOR_METHODS = ("region_sizes", "map_kinds", "baseline_draws", "figure_digit",
                   "heads", "eval_splits", "cam_thresholds", "init_from", "fan_in_init")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    xla_cpu.use_eigen_convolutions()  # before the first computation: XLA reads its flags once
    if tuple(FLAGS.config.get("methods", ()) or ()):
        # One config, several WSOL methods: the method x map-kind table.
        given = [f"--{name}" for name in NOT_FOR_METHODS if FLAGS[name].present]
        if given:
            raise app.UsageError(f"config.methods runs the method table, which does not read "
                                 f"{', '.join(given)}: drop them (or config.methods)")
        methods_table.reproduce_methods(FLAGS.config, FLAGS.workdir,
                                        seeds=[int(s) for s in FLAGS.seeds],
                                        reevaluate=FLAGS.reevaluate, figure=FLAGS.figure,
                                        log=lambda s: print(s, flush=True))
        return
    reproduction.reproduce(
        FLAGS.config, FLAGS.workdir, seeds=[int(s) for s in FLAGS.seeds],
        region_sizes=[int(r) for r in (FLAGS.region_sizes or [])], map_kinds=FLAGS.map_kinds,
        baseline_draws=FLAGS.baseline_draws, figure=FLAGS.figure,
        figure_digit=FLAGS.figure_digit, reevaluate=FLAGS.reevaluate,
        fan_in_init=FLAGS.fan_in_init, heads=FLAGS.heads, eval_splits=FLAGS.eval_splits,
        init_from=FLAGS.init_from,
        cam_thresholds=[float(t) for t in (FLAGS.cam_thresholds or [])],
        log=lambda s: print(s, flush=True))


def run() -> None:
    """The ``infocam-reproduce`` command."""
    app.run(main)
