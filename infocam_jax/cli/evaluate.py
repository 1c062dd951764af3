r"""``infocam-evaluate``: evaluates a trained workdir (CAM / infoCAM / infoCAM+ localisation and
classification).

Checks the config once (``infocam_jax.config.validate``), restores the best (or latest)
checkpoint of ``--workdir``, runs the config's final evaluators (``config.evals``;
``evaluation.evaluators``) over the chosen split and writes ``results.json`` and
``results.md`` (the paper's Table 1 or, for multi-label sets, Table 2 plus CAM vs infoCAM
localisation; other evaluators' keys as ``<name>/<key>``).

  infocam-evaluate --config configs/digits.py --workdir /tmp/digits \
      --which best --split test

``--map_table`` instead compares every map kind of the model (CAM, infoCAM, infoCAM+ and the
post-hoc maps, or ``--config.map_kinds``) in one table: MaxBoxAccV2 with the threshold chosen
on validation, and average drop / increase in confidence on test (``--config.eval_faithfulness``
adds ROAD); it writes ``map_table.{md,json}`` (``infocam_jax.experiments.map_table``):

  infocam-evaluate --config configs/cluttered_mnist.py \
      --workdir workdirs/cluttered_mnist --map_table
"""
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from infocam_jax import config as config_lib
from infocam_jax import data
from infocam_jax.evaluation import evaluators, json_files, run_tables
from infocam_jax.evaluation.scoremaps import write
from infocam_jax.evaluation.settings import EvalSettings
from infocam_jax.experiments import map_table as table_lib
from infocam_jax.experiments import readings
from infocam_jax.models import xla_cpu
from infocam_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoints.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint to restore.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "Split to evaluate.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where results.json/results.md go (default: --workdir).")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", None, "Stop after this many batches.")
_SAVE_SCOREMAPS = flags.DEFINE_string(
    "save_scoremaps", None, "Also write the score maps and ground truth here in the reference "
    "WSOL evaluation's layout (check with infocam-scoremaps or the reference).")
_MAP_TABLE = flags.DEFINE_bool(
    "map_table", False, "Compare every map kind (CAM family and post-hoc) on validation + test: "
    "MaxBoxAccV2 at the threshold chosen on validation, and faithfulness (map_table.{md,json}).")
_KINDS_PER_PASS = flags.DEFINE_integer(
    "kinds_per_pass", 0, "--map_table: map kinds per compiled eval step (0 = all in one step; "
    "smaller groups bound compile time and memory, the numbers are the same).", lower_bound=0)
_TIMING_REPEATS = flags.DEFINE_integer(
    "timing_repeats", 3, "--map_table: timed runs per kind of the ms / image column (median; "
    "0 = no timing). The table is written before the timing starts and again with it.",
    lower_bound=0)
flags.mark_flags_as_required(["config", "workdir"])


def map_table(config, settings: EvalSettings, model, variables, out_dir: str) -> None:
    """``--map_table``: the comparison of every map kind, printed and written to ``out_dir``."""
    kinds = tuple(config.get("map_kinds", ()) or table_lib.DEFAULT_KINDS)
    faith = tuple(config.get("eval_faithfulness", ()) or table_lib.DEFAULT_FAITHFULNESS)
    if _MAX_BATCHES.value:
        config.max_eval_batches = _MAX_BATCHES.value
    splits = readings.load_splits(config)
    results = table_lib.evaluate(settings, model, variables, splits["validation"],
                                 splits["test"], map_kinds=kinds, faithfulness=faith,
                                 kinds_per_pass=_KINDS_PER_PASS.value or None)
    _write_table(results, kinds, settings, out_dir)
    if _TIMING_REPEATS.value:
        speed = table_lib.seconds_per_image(settings, model, variables, splits["test"][0], kinds,
                                            repeats=_TIMING_REPEATS.value)
        results.update({f"{k}/seconds_per_image": v for k, v in speed.items()})
        _write_table(results, kinds, settings, out_dir)


def _write_table(results, kinds, settings: EvalSettings, out_dir: str) -> None:
    text = table_lib.format_table(results, kinds, settings)
    print(text)
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "map_table.md"), "w") as f:
            f.write(text)
        json_files.write_json(results, os.path.join(out_dir, "map_table.json"))
        logging.info("Wrote %s", os.path.join(out_dir, "map_table.{md,json}"))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    xla_cpu.use_eigen_convolutions()  # before the first computation: XLA reads its flags once
    config = _CONFIG.value
    checked = config_lib.validate(config)  # the one check, before anything is built or written
    variables, extra = trainer.restore_variables(config, _WORKDIR.value, _WHICH.value)
    logging.info("Restored the %s checkpoint of %s (%s)", _WHICH.value, _WORKDIR.value,
                 {k: v for k, v in dict(extra or {}).items() if k != "label_prior"})
    model = trainer.create_model(config)  # config.method and its options included
    if _MAP_TABLE.value:
        map_table(config, checked.settings, model, variables, _OUTPUT_DIR.value or _WORKDIR.value)
        return
    final = [e for e in checked.evals if e.final]
    batches_of = lambda split: data.make_iterator(  # noqa: E731
        config, split, training=False, batch_size=config.eval_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    results = evaluators.flat_results(final, evaluators.run_all(
        final, model, variables, batches_of, report_split=_SPLIT.value,
        max_batches=_MAX_BATCHES.value))
    reading = checked.settings
    print(run_tables.format_table(results, reading))
    if jax.process_index() == 0:
        paths = run_tables.write_results(
            results, _OUTPUT_DIR.value or _WORKDIR.value,
            title=f"{os.path.basename(os.path.normpath(_WORKDIR.value))}: {_SPLIT.value} split, "
                  f"{_WHICH.value} checkpoint", settings=reading)
        logging.info("Wrote %s", ", ".join(paths))
    if _SAVE_SCOREMAPS.value:
        saved = write.export_model_scoremaps(
            config, model, variables,
            data.make_iterator(config, _SPLIT.value, training=False,
                               batch_size=config.eval_batch_size,
                               process_index=jax.process_index(),
                               process_count=jax.process_count()),
            os.path.join(_SAVE_SCOREMAPS.value, f"process_{jax.process_index()}")
            if jax.process_count() > 1 else _SAVE_SCOREMAPS.value,
            split=_SPLIT.value, max_batches=_MAX_BATCHES.value)
        logging.info("Saved %d score maps per kind under %s", saved["num_images"],
                     _SAVE_SCOREMAPS.value)


def run() -> None:
    """The ``infocam-evaluate`` command."""
    app.run(main)
