"""The training driver: validate a config once, train one model per head, summarise.

``train_and_evaluate(config, workdir)`` is what ``infocam-train`` (and the README's main job)
runs: ``infocam_jax.config.validate`` at the edge, then ``train.trainer.train_single`` per head
(``config.heads``; one model when empty), and with ``config.eval_readings`` each head's
readings (``experiments.readings``) and the summary over heads.
"""
from __future__ import annotations

import os

import jax
import ml_collections

from infocam_jax import config as config_lib
from infocam_jax.experiments import readings as rd
from infocam_jax.train import trainer

__all__ = ["train_and_evaluate"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains, selects the best validation epoch and evaluates it on the test split.

    Args:
      config: experiment config (docs/interfaces.md fields; `configs/*.py`).
      workdir: output directory (checkpoints, TensorBoard logs, config.json, results.*).
        Restarting with the same workdir resumes.

    Returns:
      The test results dict of `evaluation.driver.evaluate` (fractions in [0, 1]); when
      `config.heads` lists several losses, `{loss: results}` with each model in
      `workdir/<loss>/`, and with `config.eval_readings` each head's table is printed read
      at the threshold chosen on validation (`readings.head_report`), then a summary with
      every reading, the fixed thresholds included (`readings.write_heads_summary`).
    """
    checked = config_lib.validate(config)  # the one check, before anything is built or written
    heads = tuple(config.get("heads", ()) or ())
    if not heads:
        return trainer.train_single(config, workdir, checked)
    subs = {}
    for head in heads:
        subs[head] = ml_collections.ConfigDict(config.to_dict())
        subs[head].loss, subs[head].heads = head, ()
    with_readings = bool(config.get("eval_readings", False))
    all_results = {h: trainer.train_single(sub, os.path.join(workdir, h), checked,
                                           show=not with_readings)
                   for h, sub in subs.items()}
    readings = {}
    if with_readings:
        splits = rd.load_splits(config)
        for head, sub in subs.items():
            variables, _ = trainer.restore_variables(sub, os.path.join(workdir, head), "best")
            readings[head] = rd.evaluate_run(sub, trainer.create_model(sub), variables, splits)
    if jax.process_index() == 0:
        for head, r in readings.items():
            title = trainer.run_title(subs[head], all_results[head]["epoch"])
            print(f"\n{rd.head_report(title, all_results[head], r)}", flush=True)
        text = rd.write_heads_summary(all_results, readings, workdir, checked.settings,
                                      seed=int(config.seed))
        print("\n# Summary over heads\n\n" + text, flush=True)
    return all_results
