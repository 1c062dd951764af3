"""Per-epoch validation cost against a training epoch on cluttered MNIST (issue 20).

    python benchmarks/validation_cost.py --train_steps=40 --data_dir=/tmp/tfds

Trains ``configs/cluttered_mnist.py`` for ``--train_steps`` steps after a 2-step warm-up (the
step time times the config's steps per epoch estimates one epoch), then times the per-epoch
validation of model selection on the whole validation split, twice each (the first call
compiles): the default list (``evaluation.evaluators``: classification only) and the old
per-epoch pass (the full protocol: every map kind, the 1000-threshold grid). Results go to
stdout; on a shared machine only the ratios of one run mean anything.
"""
import pathlib
import sys
import time

from absl import app, flags
import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from configs import cluttered_mnist  # noqa: E402  pylint: disable=wrong-import-position
from infocam_jax import data, models  # noqa: E402  pylint: disable=wrong-import-position
from infocam_jax.train import optim, trainer
from infocam_jax.train import loop  # noqa: E402  pylint: disable=wrong-import-position
from infocam_jax import devices  # noqa: E402  pylint: disable=wrong-import-position
from infocam_jax.train import state as ts  # noqa: E402  pylint: disable=wrong-import-position
from infocam_jax.evaluation import evaluators  # noqa: E402  pylint: disable=wrong-import-position
from infocam_jax.evaluation.settings import EvalSettings  # noqa: E402  pylint: disable=wrong-import-position

_STEPS = flags.DEFINE_integer("train_steps", 40, "Timed training steps.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data_dir (the canvases are built there).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "MNIST IDX folder (default: the config's).")


def _config():
    config = cluttered_mnist.get_config()
    config.data_dir = _DATA_DIR.value
    if _MANUAL_DIR.value:
        config.manual_dir = _MANUAL_DIR.value
    config.log_every_steps = 10 ** 6
    return config


def _train(config):
    """(seconds per training step, steps per epoch, trained host variables, model)."""
    info = data.get_info(config)
    prior = trainer.usable_prior(info.label_prior, int(info.num_examples["train"]), False)
    model, loss_fn = trainer.create_model(config), trainer.make_loss_fn(config, prior)
    plan = loop.Plan.from_config(config, info)
    variables = ts.init_variables(model, jax.random.PRNGKey(0), tuple(info.image_shape))
    mask = models.new_layer_mask(config.model, variables["params"])
    tx, schedule = optim.create_optimizer(config.optimizer, plan.steps, mask)
    p_step = ts.parallelize(lambda s, b, k: ts.train_step(s, b, k, model=model, tx=tx,
                                                          loss_fn=loss_fn, multi_label=False))
    p_state = devices.replicate(ts.create_train_state(variables, tx))
    p_key = devices.replicate(jax.random.PRNGKey(1))
    seconds = []
    for steps in (2, _STEPS.value):  # warm-up (compile), then timed
        short = loop.Plan(plan.num_epochs, steps, plan.global_batch, plan.log_every, 0)
        t0 = time.perf_counter()
        p_state, _ = loop.train_epoch(config, short, 0, p_step, p_state, p_key, schedule, None)
        jax.block_until_ready(p_state)
        seconds.append((time.perf_counter() - t0) / steps)
    return seconds[1], plan.steps, devices.unreplicate(p_state).variables, model


def _time_validation(config, model, variables, evals) -> list[float]:
    out = []
    for _ in range(2):
        t0 = time.perf_counter()
        trainer._run_evaluators(config, model, variables, evals, "validation")  # pylint: disable=protected-access
        out.append(time.perf_counter() - t0)
    return out


def main(argv):
    del argv
    config = _config()
    step_s, steps, variables, model = _train(config)
    epoch_s = step_s * steps
    print(f"training: {1000 * step_s:.1f} ms/step x {steps} steps/epoch = {epoch_s:.1f} s/epoch "
          f"(batch {config.batch_size}, {_STEPS.value} steps timed)")
    lists = {"default (classification only)":
             [e for e in evaluators.build(config) if e.every_epoch],
             "old per-epoch pass (full protocol, 1000 thresholds)":
             [evaluators.Localization("eval", EvalSettings.from_config(config), True, False)]}
    for name, evals in lists.items():
        first, steady = _time_validation(config, model, variables, evals)
        print(f"validation, {name}: first call {first:.1f} s, then {steady:.1f} s = "
              f"{100 * steady / epoch_s:.1f} % of an epoch")


if __name__ == "__main__":
    app.run(main)
