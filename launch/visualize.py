r"""Draws a PNG grid like the paper's Figures 2-5 from a trained workdir.

Rows: the images, then CAM and infoCAM(+) heat-map overlays; ground-truth boxes red, the boxes
of each map at ``config.cam_threshold`` green.

  python launch/visualize.py --config configs/digits.py --workdir /tmp/digits \
      --num_images 8 --output /tmp/digits/figures/test_grid.png
"""
import functools
import os
import pathlib
import sys

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing

from infocam_jax import data, evaluate, models, train, visualize

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoints.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint to restore.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "Split to draw from.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 8, "Images (columns) in the grid.")
_CLASS = flags.DEFINE_enum("class_source", "gt", ["gt", "pred"],
                           "Draw the maps of the ground-truth or of the predicted class.")
_KINDS = flags.DEFINE_list("map_kinds", None,
                           "Map kinds (rows); default: all kinds the config evaluates.")
_OUTPUT = flags.DEFINE_string("output", None,
                              "PNG path (default: <workdir>/figures/<split>_grid.png).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    overrides = {"map_kinds": tuple(_KINDS.value)} if _KINDS.value else {}
    settings = evaluate.EvalSettings.from_config(config, **overrides)
    variables, _ = train.restore_variables(config, _WORKDIR.value, _WHICH.value)
    model = models.create(config.model, config.num_classes, **dict(config.model_options))
    n = _NUM_IMAGES.value
    iterator = data.make_iterator(config, _SPLIT.value, training=False, batch_size=n)
    batch = next(iter(iterator))
    keep = np.asarray(batch["valid"], bool)
    batch = {k: np.asarray(v)[keep] for k, v in batch.items()}
    labels = batch["label"].astype(np.int32) if _CLASS.value == "gt" else None
    predict = jax.jit(functools.partial(evaluate.predict_maps, settings, model))
    out = jax.device_get(predict(variables, batch["image"], labels))
    gt_valid = batch["box_valid"]
    if settings.multi_label:
        # Only the boxes of the digit whose maps are drawn.
        gt_valid = gt_valid & (batch["box_labels"] == out["labels"][:, None])
    path = _OUTPUT.value or os.path.join(_WORKDIR.value, "figures", f"{_SPLIT.value}_grid.png")
    size = visualize.render_grid(batch["image"], out["scoremaps"], batch["boxes"], gt_valid,
                                 out["boxes"], path)
    logging.info("Wrote %s (%dx%d); classes drawn: %s", path, size[0], size[1],
                 out["labels"].tolist())


if __name__ == "__main__":
    app.run(main)
