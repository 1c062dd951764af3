r"""``infocam-visualize``: draws a PNG grid like the paper's Figures 2-5 from a trained workdir.

Rows: the images, then CAM and infoCAM(+) heat-map overlays; ground-truth boxes red, the boxes
of each map at ``config.cam_threshold`` green, read under ``config.normalize``
(``--config.normalize=max`` for the paper's max-normalised maps).

  infocam-visualize --config configs/digits.py --workdir /tmp/digits \
      --num_images 8 --output /tmp/digits/figures/test_grid.png
"""
import dataclasses
import itertools
import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from infocam_jax import config as config_lib
from infocam_jax import data
from infocam_jax.experiments import figures
from infocam_jax.models import xla_cpu
from infocam_jax.train import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding the checkpoints.")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint to restore.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "Split to draw from.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 8, "Images (columns) in the grid.")
_CLASS = flags.DEFINE_enum("class_source", "gt", ["gt", "pred"],
                           "Draw the maps of the ground-truth or of the predicted class.")
_CLASS_ID = flags.DEFINE_integer(
    "class_id", None, "Draw this class's maps, on images that contain it (like the paper's "
    "Figure 4, 'we aim to extract digit 0'); overrides --class_source.")
_MAX_SCAN = 50  # batches searched for images containing --class_id
_KINDS = flags.DEFINE_list("map_kinds", None,
                           "Map kinds (rows); default: all kinds the config evaluates.")
_OUTPUT = flags.DEFINE_string("output", None,
                              "PNG path (default: <workdir>/figures/<split>_grid.png).")
flags.mark_flags_as_required(["config", "workdir"])


def _contains(batch, class_id):
    """bool ``[b]``: valid examples showing ``class_id`` (label, multi-hot or a box label)."""
    keep = np.asarray(batch["valid"], bool)
    if class_id is None:
        return keep
    has = np.asarray(batch["label"]) == class_id
    if "labels" in batch:
        has |= np.asarray(batch["labels"])[:, class_id] > 0.5
    if "box_labels" in batch:
        has |= np.any((np.asarray(batch["box_labels"]) == class_id)
                      & np.asarray(batch["box_valid"], bool), axis=1)
    return keep & has


def _select_images(config, n, class_id):
    """The first ``n`` valid examples of the split (containing ``class_id`` when given)."""
    if class_id is not None and not 0 <= class_id < config.num_classes:
        raise app.UsageError(f"--class_id must be in [0, {config.num_classes}), got {class_id}")
    iterator = data.make_iterator(config, _SPLIT.value, training=False, batch_size=n)
    parts, found = [], 0
    for batch in itertools.islice(iterator, _MAX_SCAN):
        keep = _contains(batch, class_id)
        parts.append({k: np.asarray(v)[keep] for k, v in batch.items()})
        found += int(keep.sum())
        if found >= n:
            break
    if not found:
        raise app.UsageError(f"no image with class {class_id} in the first {_MAX_SCAN} "
                             f"batches of the {_SPLIT.value} split")
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    xla_cpu.use_eigen_convolutions()  # before the first computation: XLA reads its flags once
    config = _CONFIG.value
    checked = config_lib.validate(config)  # the one check, before anything is built or written
    overrides = {"map_kinds": tuple(_KINDS.value)} if _KINDS.value else {}
    settings = dataclasses.replace(checked.settings, **overrides)
    variables, _ = trainer.restore_variables(config, _WORKDIR.value, _WHICH.value)
    model = trainer.create_model(config)  # config.method and its options included
    n = _NUM_IMAGES.value
    batch = _select_images(config, n, _CLASS_ID.value)
    if _CLASS_ID.value is not None:
        labels = np.full(len(batch["valid"]), _CLASS_ID.value, np.int32)
    else:
        labels = batch["label"].astype(np.int32) if _CLASS.value == "gt" else None
    path = _OUTPUT.value or os.path.join(_WORKDIR.value, "figures", f"{_SPLIT.value}_grid.png")
    # Multi-label: only the ground-truth boxes of the digit whose maps are drawn.
    size, drawn = figures.draw_model_maps(settings, model, variables, batch, labels, path,
                                            label_boxes_only=settings.multi_label)
    logging.info("Wrote %s (%dx%d); classes drawn: %s; green boxes: %s", path, size[0],
                 size[1], drawn.tolist(), settings.reading)


def run() -> None:
    """The ``infocam-visualize`` command."""
    app.run(main)
