"""PNG grids of class activation maps, like the paper's Figures 2-5.

One column per image; the first row shows the image, each further row the image overlaid with
one map kind's heat map (jet colour map, brighter = higher value). Ground-truth boxes are drawn
in red on every row, predicted boxes in green on the heat-map rows.

:func:`render_grid` is host-side NumPy + Pillow only (no JAX, no matplotlib needed), so it can
run anywhere; :func:`draw_model_maps` first runs a model (JAX, imported when called) to get the
maps and boxes under the settings' reading (``EvalSettings.normalize``, ``cam_threshold``).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Mapping

import jax
import numpy as np
from PIL import Image, ImageDraw

from infocam_jax.evaluation import forward
from infocam_jax.evaluation.settings import DISPLAY_NAMES

GT_COLOUR = (255, 0, 0)
PRED_COLOUR = (0, 255, 0)
_PAD = 4          # pixels between cells and around the grid
_LABEL_WIDTH = 96  # left margin holding the row names
_MIN_CELL = 128   # small images (digits) are upscaled by an integer factor to at least this
# Row labels: the map kinds' display names (evaluation.settings), shortened to fit the margin.
ROW_NAMES = {"image": "image", **DISPLAY_NAMES, "infocam_plus_region": "infoCAM+ (R)",
             "cam_region": "CAM (R sum)", "rollout": "rollout"}


def _cell_scale(height: int, width: int) -> int:
    """Integer upscale factor so that a cell is at least ``_MIN_CELL`` pixels on its long side."""
    return max(1, _MIN_CELL // max(height, width))


def grid_size(num_images: int, num_rows: int, height: int, width: int) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of the PNG that :func:`render_grid` writes.

    Args:
      num_images: B, the number of columns.
      num_rows: 1 + the number of map kinds.
      height: H of the input images.
      width: W of the input images.
    """
    s = _cell_scale(height, width)
    return (_LABEL_WIDTH + num_images * (width * s + _PAD) + _PAD,
            num_rows * (height * s + _PAD) + _PAD)


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map: values in [0, 1] of any shape -> uint8 RGB of shape ``[..., 3]``."""
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0])  # red, green, blue
    rgb = np.clip(1.5 - np.abs(4.0 * v - centres), 0.0, 1.0)
    return np.round(255.0 * rgb).astype(np.uint8)


def _to_unit(x: np.ndarray) -> np.ndarray:
    """Min-max scales each leading-axis entry of ``x`` to [0, 1] (constant entries -> 0)."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(1, x.ndim))
    lo = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)


def _display_images(images: np.ndarray) -> np.ndarray:
    """``[B,H,W,C]`` (C in {1,3}, uint8 or normalised float) -> uint8 RGB ``[B,H,W,3]``."""
    if images.dtype == np.uint8:
        rgb = images
    else:
        # Normalised inputs (ImageNet mean/std, x/255, ...): stretch each image for display.
        rgb = np.round(255.0 * _to_unit(images)).astype(np.uint8)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return rgb


def _as_box_array(boxes, num_images: int, name: str) -> np.ndarray:
    """Accepts ``[B,4]`` or ``[B,P,4]`` boxes; returns int ``[B,P,4]``."""
    boxes = np.asarray(boxes)
    if boxes.ndim == 2:
        boxes = boxes[:, None, :]
    if boxes.ndim != 3 or boxes.shape[0] != num_images or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [B, 4] or [B, P, 4] with B={num_images}, "
                         f"got {boxes.shape}")
    return boxes.astype(np.int64)


def _draw_boxes(draw: ImageDraw.ImageDraw, boxes: np.ndarray, origin: tuple[int, int],
                scale: int, colour: tuple[int, int, int], valid: np.ndarray | None = None):
    """Draws inclusive pixel boxes ``[P,4]`` (x0, y0, x1, y1) scaled by ``scale`` at ``origin``."""
    ox, oy = origin
    width = max(1, scale // 4 + 1)
    for p, (x0, y0, x1, y1) in enumerate(boxes):
        if valid is not None and not valid[p]:
            continue
        draw.rectangle([ox + x0 * scale, oy + y0 * scale,
                        ox + (x1 + 1) * scale - 1, oy + (y1 + 1) * scale - 1],
                       outline=colour, width=width)


def render_grid(images, maps_by_kind: Mapping[str, np.ndarray], gt_boxes, gt_valid,
                pred_boxes_by_kind: Mapping[str, np.ndarray], path: str | os.PathLike,
                *, alpha: float = 0.5) -> tuple[int, int]:
    """Writes a PNG grid: image row, then one heat-map overlay row per map kind.

    Args:
      images: ``[B,H,W,C]`` with C in {1, 3}; uint8, or float in any range (each image is
        min-max stretched for display, which undoes any per-channel normalisation's offset).
      maps_by_kind: ``{kind: [B,H,W]}`` score maps at image resolution (e.g. the output of
        ``boxes.scoremaps``); each map is min-max scaled per image before colouring. Rows are
        drawn in the dict's order, labelled with the kind (``ROW_NAMES`` spelling).
      gt_boxes: int ``[B,G,4]`` ground-truth boxes ``(x0, y0, x1, y1)``, inclusive pixels.
      gt_valid: bool ``[B,G]``, which ground-truth boxes are real.
      pred_boxes_by_kind: ``{kind: [B,4] or [B,P,4]}`` predicted boxes, kinds a subset of
        ``maps_by_kind``'s.
      path: output PNG file (parent directories are created).
      alpha: heat-map opacity in [0, 1].

    Returns:
      ``(width, height)`` of the written PNG, equal to ``grid_size(B, 1 + len(maps_by_kind), H, W)``.

    Raises:
      ValueError: on inconsistent shapes, unknown kinds or ``alpha`` outside [0, 1].
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape [B, H, W, C] with C in (1, 3), got {images.shape}")
    b, h, w, _ = images.shape
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    gt = _as_box_array(gt_boxes, b, "gt_boxes")
    gt_valid = np.asarray(gt_valid, bool)
    if gt_valid.shape != gt.shape[:2]:
        raise ValueError(f"gt_valid must have shape {gt.shape[:2]} (that of gt_boxes[..., 0]), "
                         f"got {gt_valid.shape}")
    maps = {}
    for kind, m in maps_by_kind.items():
        m = np.asarray(m)
        if m.shape != (b, h, w):
            raise ValueError(f"maps_by_kind[{kind!r}] must have shape {(b, h, w)}, got {m.shape}")
        maps[kind] = _to_unit(m)
    preds = {}
    for kind, p in pred_boxes_by_kind.items():
        if kind not in maps:
            raise ValueError(f"pred_boxes_by_kind has kind {kind!r} not in maps_by_kind "
                             f"({list(maps)})")
        preds[kind] = _as_box_array(p, b, f"pred_boxes_by_kind[{kind!r}]")

    s = _cell_scale(h, w)
    cw, ch = w * s, h * s
    size = grid_size(b, 1 + len(maps), h, w)
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    rgb = _display_images(images).astype(np.float64)
    rows = [("image", None)] + list(maps.items())
    for r, (name, unit_maps) in enumerate(rows):
        y = _PAD + r * (ch + _PAD)
        draw.text((_PAD, y + ch // 2 - 6), ROW_NAMES.get(name, name), fill=(0, 0, 0))
        for i in range(b):
            x = _LABEL_WIDTH + i * (cw + _PAD)
            cell = rgb[i]
            if unit_maps is not None:
                cell = (1.0 - alpha) * cell + alpha * jet(unit_maps[i])
            cell = np.repeat(np.repeat(np.round(cell).astype(np.uint8), s, 0), s, 1)
            canvas.paste(Image.fromarray(cell), (x, y))
            _draw_boxes(draw, gt[i], (x, y), s, GT_COLOUR, gt_valid[i])
            if name in preds:
                _draw_boxes(draw, preds[name][i], (x, y), s, PRED_COLOUR)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path, format="PNG")
    return size


def draw_model_maps(settings, model, variables, batch: Mapping[str, np.ndarray], labels,
                    path: str | os.PathLike, *, label_boxes_only: bool = False
                    ) -> tuple[tuple[int, int], np.ndarray]:
    """Runs ``model`` on ``batch`` and writes the grid of the maps of ``labels``.

    Args:
      settings: ``evaluation.settings.EvalSettings`` (map kinds = rows; upsampling,
        normalisation and ``cam_threshold`` decide the green boxes).
      model: Flax module, ``apply(variables, images, train=False) -> (logits, features)``.
      variables: its variables.
      batch: dict with ``image`` ``[B,H,W,C]``, ``boxes`` ``[B,G,4]``, ``box_valid`` ``[B,G]``
        (and ``box_labels`` ``[B,G]`` for ``label_boxes_only``).
      labels: int ``[B]`` class whose maps are drawn per image, or None for the predicted one.
      path: output PNG.
      label_boxes_only: draw only the ground-truth boxes of the drawn class (multi-label).

    Returns:
      ``(png size, labels drawn int [B])``.
    """
    predict = jax.jit(functools.partial(forward.predict_maps, settings, model))
    out = jax.device_get(predict(variables, batch["image"], labels))
    gt_valid = np.asarray(batch["box_valid"], bool)
    if label_boxes_only:
        gt_valid = gt_valid & (np.asarray(batch["box_labels"]) == out["labels"][:, None])
    # Rows in the settings' order (the pytree round trip sorts the dict's keys).
    scoremaps = {k: out["scoremaps"][k] for k in settings.map_kinds}
    size = render_grid(batch["image"], scoremaps, batch["boxes"], gt_valid, out["boxes"], path)
    return size, np.asarray(out["labels"])
