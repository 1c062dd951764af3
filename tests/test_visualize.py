"""Tests of infocam_jax.experiments.figures: PNG grid size, box colours, heat-map colours, bad input."""
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from infocam_jax.evaluation.settings import EvalSettings
from infocam_jax.experiments import figures


class PassThrough(nn.Module):
    """``(logits = Dense(GAP(x)), features = x)``: the images are their own feature maps."""

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(2, name="head")(x.mean((1, 2))), x


# One input channel into 2 classes, opposite weights: class 1's CAM is minus class 0's.
PASS_THROUGH_VARIABLES = {"params": {"head": {"kernel": jnp.array([[1.0, -1.0]]),
                                              "bias": jnp.zeros(2)}}}


def _inputs(b=3, h=16, w=16, c=1):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(b, h, w, c)).astype(np.float32)
    maps = {"cam": rng.uniform(size=(b, h, w)), "infocam_plus": rng.uniform(size=(b, h, w))}
    gt = np.array([[[2, 3, 9, 10], [0, 0, 0, 0]]] * b, np.int32)
    gt_valid = np.array([[True, False]] * b)
    preds = {"cam": np.array([[4, 4, 12, 12]] * b, np.int32),
             "infocam_plus": np.array([[[1, 1, 5, 5]]] * b, np.int32)}
    return images, maps, gt, gt_valid, preds


@pytest.mark.parametrize("shape", [(3, 16, 16, 1), (2, 24, 20, 3)])
def test_png_has_expected_size(tmp_path, shape):
    b, h, w, c = shape
    images, maps, gt, gt_valid, preds = _inputs(b, h, w, c)
    path = tmp_path / "sub" / "grid.png"
    size = figures.render_grid(images, maps, gt, gt_valid, preds, path)
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == size == figures.grid_size(b, 3, h, w)
    # 16 px images are upscaled by 8 (cells >= 128 px); width: label margin + B cells + pads.
    if h == 16:
        assert size == (96 + b * (128 + 4) + 4, 3 * (128 + 4) + 4)


def test_boxes_drawn_in_red_and_green(tmp_path):
    images, maps, gt, gt_valid, preds = _inputs()
    path = tmp_path / "grid.png"
    figures.render_grid(images, maps, gt, gt_valid, preds, path)
    px = np.asarray(Image.open(path).convert("RGB"))
    s, pad, left = 8, 4, 96
    # Image row, column 0: GT box (2, 3, 9, 10) -> top-left corner at pixel (2*8, 3*8).
    assert tuple(px[pad + 3 * s, left + 2 * s]) == figures.GT_COLOUR
    # The invalid GT slot (0, 0, 0, 0) is not drawn: the cell's corner is not red.
    assert tuple(px[pad, left]) != figures.GT_COLOUR
    # CAM row (row 1): predicted box (4, 4, 12, 12) top edge in green.
    y0 = pad + (16 * s + pad)
    assert tuple(px[y0 + 4 * s, left + 6 * s]) == figures.PRED_COLOUR
    # Image row has no predicted boxes.
    assert tuple(px[pad + 4 * s, left + 6 * s]) != figures.PRED_COLOUR


def test_jet_matches_endpoints():
    np.testing.assert_array_equal(figures.jet(np.array([0.0, 0.5, 1.0])),
                                  [[0, 0, 128], [128, 255, 128], [128, 0, 0]])


def test_heatmap_follows_map(tmp_path):
    b, h, w = 1, 16, 16
    images = np.zeros((b, h, w, 3), np.uint8)
    m = np.zeros((b, h, w))
    m[0, :, 8:] = 1.0                       # hot right half, cold left half
    path = tmp_path / "g.png"
    figures.render_grid(images, {"cam": m}, np.zeros((b, 1, 4), np.int32),
                          np.zeros((b, 1), bool), {}, path, alpha=1.0)
    px = np.asarray(Image.open(path).convert("RGB")).astype(int)
    y = 4 + 128 + 4 + 64
    left_rgb, right_rgb = px[y, 96 + 32], px[y, 96 + 96]
    np.testing.assert_array_equal(left_rgb, figures.jet(0.0))
    np.testing.assert_array_equal(right_rgb, figures.jet(1.0))


def test_bad_inputs_raise(tmp_path):
    images, maps, gt, gt_valid, preds = _inputs()
    with pytest.raises(ValueError, match="images"):
        figures.render_grid(images[0], maps, gt, gt_valid, preds, tmp_path / "a.png")
    with pytest.raises(ValueError, match="maps_by_kind"):
        figures.render_grid(images, {"cam": maps["cam"][:, :8]}, gt, gt_valid, {},
                              tmp_path / "a.png")
    with pytest.raises(ValueError, match="gt_valid"):
        figures.render_grid(images, maps, gt, gt_valid[:, :1], preds, tmp_path / "a.png")
    with pytest.raises(ValueError, match="not in maps_by_kind"):
        figures.render_grid(images, {"cam": maps["cam"]}, gt, gt_valid, preds,
                              tmp_path / "a.png")
    with pytest.raises(ValueError, match="alpha"):
        figures.render_grid(images, maps, gt, gt_valid, preds, tmp_path / "a.png", alpha=2)


def test_draw_model_maps_writes_the_grid_of_the_requested_class(tmp_path):
    variables = PASS_THROUGH_VARIABLES
    images, _, gt, gt_valid, _ = _inputs(b=2)
    batch = {"image": images, "boxes": gt, "box_valid": gt_valid,
             "box_labels": np.array([[1, 0], [0, 0]], np.int32)}
    settings = EvalSettings(image_size=(16, 16), map_kinds=("cam", "infocam"), num_classes=2,
                            normalize="max")
    size, drawn = figures.draw_model_maps(settings, PassThrough(), variables, batch,
                                            np.array([1, 1], np.int32), tmp_path / "g.png",
                                            label_boxes_only=True)
    assert drawn.tolist() == [1, 1]
    with Image.open(tmp_path / "g.png") as im:
        assert im.size == size == figures.grid_size(2, 3, 16, 16)


def test_draw_model_maps_keeps_the_settings_order_and_display_names(tmp_path, monkeypatch):
    """Rows follow ``settings.map_kinds`` (not the sorted keys of the jitted output) and are
    labelled with the kinds' display names."""
    variables = PASS_THROUGH_VARIABLES
    images, _, gt, gt_valid, _ = _inputs(b=2)
    batch = {"image": images, "boxes": gt, "box_valid": gt_valid}
    kinds = ("infocam", "cam", "gradcam")
    settings = EvalSettings(image_size=(16, 16), map_kinds=kinds, num_classes=2)
    seen = []
    render = figures.render_grid
    monkeypatch.setattr(figures, "render_grid",
                        lambda images, maps, *a, **k: seen.append(list(maps))
                        or render(images, maps, *a, **k))
    figures.draw_model_maps(settings, PassThrough(), variables, batch, np.array([0, 1]),
                            tmp_path / "g.png")
    assert seen == [list(kinds)]
    assert [figures.ROW_NAMES[k] for k in kinds] == ["infoCAM", "CAM", "Grad-CAM"]
