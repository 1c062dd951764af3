"""Tests of infocam_jax.evaluation (driver, step, forward, run_tables): results keys/ranges, padding, hand-built boxes, devices, files.

Small stand-in models with the (logits, features) contract on 16x16 inputs keep compile time
low; the maths of maps, boxes and metrics is tested in their own modules, so these tests check
the wiring: which maps reach which counters, masking of padded examples, device/batch
splitting, aggregation against a plain NumPy statement, and the written run_tables.
"""
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from infocam_jax.evaluation import driver, forward, run_tables, settings as eval_settings

import two_devices  # tests/two_devices.py (tests/ is on sys.path under pytest)

SIZE = 16
NUM_CLASSES = 5
NUM_THRESHOLDS = 10
SINGLE_KEYS = {"num_images", "top1_cls", "top5_cls", "accuracy"} | {
    f"{k}/{m}" for k in eval_settings.MAP_KINDS
    for m in ("gt_known_loc", "top1_loc", "max_box_acc", "max_box_acc_threshold",
              "max_box_acc_v2", "max_box_acc_v2_iou30", "max_box_acc_v2_iou50",
              "max_box_acc_v2_iou70")}


class TinyNet(nn.Module):
    """Conv (stride 2) -> ReLU -> features [B, 8, 8, 8] -> GAP -> Dense "head"."""
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        features = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv")(x))
        return nn.Dense(self.num_classes, name="head")(features.mean((1, 2))), features


class PassThrough(nn.Module):
    """Features are the image itself ([B, H, W, C]); only the head has parameters."""
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes, name="head")(x.mean((1, 2))), x


def make_config(**overrides):
    config = ml_collections.ConfigDict({
        "image_size": (SIZE, SIZE), "upsample": "bicubic", "region_size": 3, "cam_threshold": 0.2,
        "iou_threshold": 0.5, "num_box_thresholds": NUM_THRESHOLDS, "multi_label": False,
        "num_classes": NUM_CLASSES})
    config.update(overrides)
    return config


def make_data(n=10, seed=0):
    """n synthetic single-label examples, two GT slots (the second valid for some)."""
    rng = np.random.default_rng(seed)
    x0 = rng.integers(0, 8, (n, 2))
    y0 = rng.integers(0, 8, (n, 2))
    boxes = np.stack([x0, y0, x0 + rng.integers(2, 8, (n, 2)),
                      y0 + rng.integers(2, 8, (n, 2))], -1).astype(np.int32)
    return {
        "image": rng.normal(size=(n, SIZE, SIZE, 1)).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES, n).astype(np.int32),
        "boxes": boxes,
        "box_valid": np.stack([np.ones(n, bool), rng.uniform(size=n) < 0.5], -1),
        "valid": np.ones(n, bool),
    }


def split_batches(data, size, pad=True, seed=1):
    """Batches of ``size``; the last one padded with random *garbage* marked invalid."""
    rng = np.random.default_rng(seed)
    n = len(data["valid"])
    out = []
    for start in range(0, n, size):
        batch = {k: v[start:start + size] for k, v in data.items()}
        short = size - len(batch["valid"])
        if pad and short:
            garbage = make_data(short, seed=int(rng.integers(1000)))
            garbage["valid"][:] = False
            batch = {k: np.concatenate([batch[k], garbage[k]]) for k in batch}
        out.append(batch)
    return out


def tiny_variables(model, channels=1):
    return model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, channels)))


@pytest.fixture(scope="module")
def tiny():
    model = TinyNet(NUM_CLASSES)
    return model, tiny_variables(model), make_data()


@pytest.fixture(scope="module")
def one_batch_results(tiny):
    model, variables, data = tiny
    return driver.evaluate(make_config(), model, variables, [data], num_devices=1)


def test_results_keys_and_ranges(one_batch_results):
    res = one_batch_results
    assert set(res) == SINGLE_KEYS
    assert res["num_images"] == 10
    for key, value in res.items():
        if key != "num_images":
            assert 0.0 <= value <= 1.0, (key, value)
    assert res["accuracy"] == res["top1_cls"]
    for kind in eval_settings.MAP_KINDS:
        assert res[f"{kind}/top1_loc"] <= min(res[f"{kind}/gt_known_loc"], res["top1_cls"])
        v2 = [res[f"{kind}/max_box_acc_v2_iou{i}"] for i in (30, 50, 70)]
        assert v2[0] >= v2[1] >= v2[2]
        np.testing.assert_allclose(res[f"{kind}/max_box_acc_v2"], np.mean(v2), rtol=1e-6)


def test_fixed_threshold_only_matches_full(tiny, one_batch_results):
    """eval_box_accuracy=False: the paper's metrics only, equal to the full evaluation's."""
    model, variables, data = tiny
    res = driver.evaluate(make_config(eval_box_accuracy=False), model, variables, [data],
                            num_devices=1)
    assert set(res) == {k for k in SINGLE_KEYS if "max_box_acc" not in k}
    assert res == pytest.approx({k: one_batch_results[k] for k in res}, rel=1e-6)


def test_matches_numpy_statement(tiny, one_batch_results):
    """Aggregation against NumPy from per-image IoUs of the same maps and boxes."""
    from infocam_jax import boxes
    model, variables, data = tiny
    settings = eval_settings.EvalSettings.from_config(make_config())
    grid = settings.box_thresholds

    @jax.jit
    def per_image(variables, images, labels, gt, gt_valid):
        out = forward.predict_maps(settings, model, variables, images, labels)
        ious = {}
        for kind, sm in out["scoremaps"].items():
            ious[kind] = (
                boxes.max_contour_iou(sm, np.array([0.2]), gt, gt_valid, multi_contour=False),
                boxes.max_contour_iou(sm, grid, gt, gt_valid, multi_contour=False),
                boxes.max_contour_iou(sm, grid, gt, gt_valid, multi_contour=True))
        return out["logits"], ious

    logits, ious = jax.device_get(per_image(variables, data["image"], data["label"],
                                            data["boxes"], data["box_valid"]))
    labels = data["label"]
    order = np.argsort(-logits, axis=1, kind="stable")
    top1 = order[:, 0] == labels
    res = one_batch_results
    np.testing.assert_allclose(res["top1_cls"], top1.mean())
    np.testing.assert_allclose(res["top5_cls"], (order[:, :5] == labels[:, None]).any(1).mean())
    for kind, (fixed, largest, multi) in ious.items():
        gt_known = fixed[:, 0] >= 0.5
        np.testing.assert_allclose(res[f"{kind}/gt_known_loc"], gt_known.mean())
        np.testing.assert_allclose(res[f"{kind}/top1_loc"], (gt_known & top1).mean())
        box_acc = (largest >= 0.5).mean(0)
        np.testing.assert_allclose(res[f"{kind}/max_box_acc"], box_acc.max())
        assert res[f"{kind}/max_box_acc_threshold"] == pytest.approx(grid[np.argmax(box_acc)])
        v2 = [(multi >= d).mean(0).max() for d in (0.3, 0.5, 0.7)]
        np.testing.assert_allclose(res[f"{kind}/max_box_acc_v2"], np.mean(v2), rtol=1e-6)


@pytest.mark.parametrize("pad", [True, False], ids=["padded_garbage", "short_last_batch"])
def test_padded_last_batch_counts_each_image_once(tiny, one_batch_results, pad):
    model, variables, data = tiny
    res = driver.evaluate(make_config(), model, variables, split_batches(data, 4, pad=pad),
                            num_devices=1)
    assert res == pytest.approx(one_batch_results, rel=1e-6)


def _square_image(x0, y0, x1, y1, channels=1, channel=0):
    image = np.zeros((SIZE, SIZE, channels), np.float32)
    image[y0:y1 + 1, x0:x1 + 1, channel] = 1.0
    return image


def test_hand_built_square_gives_known_box():
    """All feature mass in a known square: box (x0, y0, x_max+1, y_max+1), GT-known Loc 1."""
    model = PassThrough(2)
    variables = {"params": {"head": {"kernel": jnp.array([[1.0, -1.0]]),
                                     "bias": jnp.zeros(2)}}}
    squares = [(3, 4, 10, 9), (8, 1, 13, 12), (2, 2, 6, 6)]
    batch = {
        "image": np.stack([_square_image(*s) for s in squares]),
        "label": np.zeros(3, np.int32),
        # GT = the protocol's box of the square; the third (invalid) example's GT is far off.
        "boxes": np.array([[[3, 4, 11, 10]], [[8, 1, 14, 13]], [[10, 10, 15, 15]]], np.int32),
        "box_valid": np.ones((3, 1), bool),
        "valid": np.array([True, True, False]),
    }
    # A CNN: no attention maps. FEM keeps the positions above mean + 2 std of the channel: on a
    # binary square covering more than ~20 % of the image that is none (an empty map, correctly).
    kinds = tuple(k for k in eval_settings.KNOWN_MAP_KINDS
                  if k not in eval_settings.ATTENTION_MAP_KINDS + ("fem",))
    config = make_config(num_classes=2, map_kinds=kinds)
    # The boxes of CAM alone (the eval step below computes every kind: a second program with
    # all of them would double the compile time).
    settings = eval_settings.EvalSettings.from_config(make_config(num_classes=2,
                                                                  map_kinds=("cam",)))
    out = jax.jit(lambda v, x, y: forward.predict_maps(settings, model, v, x, y))(
        variables, batch["image"], batch["label"])
    np.testing.assert_array_equal(out["boxes"]["cam"], [[3, 4, 11, 10], [8, 1, 14, 13],
                                                        [2, 2, 7, 7]])
    res = driver.evaluate(config, model, variables, [batch], num_devices=1)
    assert res["num_images"] == 2
    assert res["top1_cls"] == 1.0
    # Region sums widen the box by one pixel: IoU still > 0.5. With two classes of opposite
    # weights the region rival of infoCAM+ (eq. 3) gives twice the CAM's region sum.
    for kind in kinds:
        assert res[f"{kind}/gt_known_loc"] == 1.0, kind
        assert res[f"{kind}/top1_loc"] == 1.0, kind
        assert res[f"{kind}/max_box_acc"] == 1.0, kind
    assert res["cam/max_box_acc_v2"] == 1.0
    assert "| infoCAM+ (region rival) | 100.00 | 100.00 | 100.00 |" in run_tables.format_table(res)


def test_multi_label_hand_built():
    """Two digits (classes 0 and 2) in their own channels; class 1 alone in a second image."""
    model = PassThrough(3)
    variables = {"params": {"head": {"kernel": jnp.eye(3), "bias": jnp.zeros(3)}}}
    img0 = _square_image(1, 3, 6, 12, 3, 0) + _square_image(9, 2, 14, 11, 3, 2)
    img1 = _square_image(4, 4, 11, 11, 3, 1)
    batch = {
        "image": np.stack([img0, img1]),
        "label": np.array([0, 1], np.int32),
        "labels": np.array([[1, 0, 1], [0, 1, 0]], np.float32),
        "boxes": np.array([[[1, 3, 7, 13], [9, 2, 15, 12]], [[4, 4, 12, 12], [0, 0, 0, 0]]],
                          np.int32),
        "box_labels": np.array([[0, 2], [1, 0]], np.int32),
        "box_valid": np.array([[True, True], [True, False]]),
        "valid": np.ones(2, bool),
    }
    res = driver.evaluate(make_config(num_classes=3, multi_label=True), model, variables,
                            [batch], num_devices=1)
    expected = {"num_images", "cls_acc", "exact_match", "accuracy"} | {
        f"digit_acc/{c}" for c in range(3)} | {
        f"{k}/loc_acc{s}" for k in ("cam", "infocam") for s in ("", "/0", "/1", "/2")}
    assert set(res) == expected
    for key, value in res.items():
        if key != "num_images":
            assert value == 1.0, key
    table = run_tables.format_table(res)
    assert "| CAM | 100.00 | 100.00 | 100.00 | 100.00 |" in table
    assert "| infoCAM |" in table


def test_two_devices_match_one(one_batch_results):
    """Two simulated CPU devices (subprocess) give the results of one device."""
    results = two_devices.run_json("""
        import test_evaluate as t
        from infocam_jax.evaluation import driver
        model = t.TinyNet(t.NUM_CLASSES)
        data = t.make_data()
        # Batches of 3 (3, 3, 3, 1): evaluate pads each to 4 so that it splits over 2 devices.
        res = driver.evaluate(t.make_config(), model, t.tiny_variables(model),
                              t.split_batches(data, 3, pad=False), num_devices=2)
        print("RESULTS" + json.dumps(res))
    """)
    assert results == pytest.approx(one_batch_results, rel=1e-6)


def test_write_results_writes_json_and_table(tmp_path, one_batch_results):
    res = dict(one_batch_results, epoch=3.0)
    json_path, md_path = run_tables.write_results(res, tmp_path / "w", title="tiny")
    with open(json_path) as f:
        assert json.load(f) == pytest.approx(res)
    text = pathlib.Path(md_path).read_text()
    assert text.startswith("# tiny\n")
    assert "| Map | GT-known Loc | Top-1 Loc | Top-1 Cls | Top-5 Cls | MaxBoxAccV2 |" in text
    for name, kind in (("CAM", "cam"), ("infoCAM", "infocam"), ("infoCAM+", "infocam_plus")):
        row = (f"| {name} | {100 * res[kind + '/gt_known_loc']:.2f} | "
               f"{100 * res[kind + '/top1_loc']:.2f} | {100 * res['top1_cls']:.2f} | ")
        assert row in text
    assert run_tables.format_table(res) in text


def test_nan_is_written_as_null(tmp_path):
    json_path, _ = run_tables.write_results({"cam/loc_acc/3": float("nan"), "num_images": 1.0},
                                          tmp_path)
    assert json.loads(pathlib.Path(json_path).read_text())["cam/loc_acc/3"] is None


def test_bad_inputs_raise(tiny):
    model, variables, data = tiny
    with pytest.raises(ValueError, match="missing keys"):
        driver.evaluate(make_config(), model, variables,
                          [{k: v for k, v in data.items() if k != "boxes"}], num_devices=1)
    with pytest.raises(ValueError, match="map_kinds"):
        eval_settings.EvalSettings.from_config(make_config(), map_kinds=("smoothgrad",))
    with pytest.raises(ValueError, match="multi-label"):
        eval_settings.EvalSettings.from_config(make_config(multi_label=True),
                                          map_kinds=("infocam_plus",))
    with pytest.raises(ValueError, match="num_devices"):
        driver.evaluate(make_config(), model, variables, [data], num_devices=64)


@pytest.mark.parametrize("normalize,expected", [
    ("minmax", [3, 4, 14, 10]),   # (0.1 + 1) / 2 = 0.55 > 0.2: the weak blob joins the square
    ("max", [3, 4, 11, 10]),      # max(0.1, 0) / 1 = 0.1 < 0.2: the square alone
])
def test_normalize_decides_the_box(normalize, expected):
    """A signed map (background -1, square +1, weak blob +0.1 beside it) read both ways."""
    model = PassThrough(2)
    variables = {"params": {"head": {"kernel": jnp.array([[1.0, -1.0]]), "bias": jnp.zeros(2)}}}
    image = -np.ones((1, SIZE, SIZE, 1), np.float32)
    image[0, 4:10, 3:11] = 1.0
    image[0, 4:10, 11:14] = 0.1
    settings = eval_settings.EvalSettings.from_config(make_config(num_classes=2,
                                                                  normalize=normalize))
    out = forward.predict_maps(settings, model, variables, image, np.zeros(1, np.int32))
    np.testing.assert_array_equal(out["boxes"]["cam"][0], expected)
    assert float(out["scoremaps"]["cam"].min()) == 0.0
    assert float(out["scoremaps"]["cam"].max()) == pytest.approx(1.0)


def _multi_label_data(n=8, seed=3):
    """n random 3-channel images, 1-2 present labels of 3, one GT box per present label."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 3), np.float32)
    box_labels = np.zeros((n, 2), np.int32)
    box_valid = np.zeros((n, 2), bool)
    for i in range(n):
        present = rng.choice(3, size=int(rng.integers(1, 3)), replace=False)
        labels[i, present] = 1
        box_labels[i, :len(present)] = present
        box_valid[i, :len(present)] = True
    x0 = rng.integers(0, 8, (n, 2))
    y0 = rng.integers(0, 8, (n, 2))
    boxes = np.stack([x0, y0, x0 + rng.integers(3, 8, (n, 2)),
                      y0 + rng.integers(3, 8, (n, 2))], -1).astype(np.int32)
    return {"image": rng.normal(size=(n, SIZE, SIZE, 3)).astype(np.float32),
            "label": box_labels[:, 0].copy(), "labels": labels, "boxes": boxes,
            "box_labels": box_labels, "box_valid": box_valid, "valid": np.ones(n, bool)}


@pytest.mark.parametrize("backend", ["xla", "native"])
def test_multilabel_grid_step_matches_the_eval_step_with_its_box_backend(backend, monkeypatch):
    """region_grid's (map, R) x threshold step counts what the eval step counts at each fixed
    threshold, and hands the settings' box_backend to every box pass."""
    from infocam_jax.native import ffi
    from infocam_jax.metrics import multilabel
    from infocam_jax.evaluation import region_grid
    if backend == "native" and not ffi.available():
        pytest.skip("compiled box kernel not built")
    model = TinyNet(3)
    variables = tiny_variables(model, channels=3)
    batch = _multi_label_data()
    seen = []
    real = multilabel.slot_max_iou
    monkeypatch.setattr(multilabel, "slot_max_iou",
                        lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    config = make_config(num_classes=3, multi_label=True, box_backend=backend)
    kinds_r, thresholds = (("cam", 1), ("infocam", 3)), (0.2, 0.5, 0.8)
    grid_step = region_grid.make_multilabel_grid_step(
        eval_settings.EvalSettings.from_config(config), model, kinds_r=kinds_r,
        thresholds=thresholds)
    grid = region_grid.multilabel_grid(grid_step, variables, [batch], kinds_r=kinds_r,
                                       thresholds=thresholds)
    assert seen and all(kw == {"backend": backend} for kw in seen)
    monkeypatch.undo()
    values = set()
    for t in thresholds:
        res = driver.evaluate(make_config(num_classes=3, multi_label=True, cam_threshold=t,
                                          box_backend=backend, eval_box_accuracy=False),
                              model, variables, [batch], num_devices=1)
        for kind, r in kinds_r:
            assert grid[f"t{t:g}/R{r}/{kind}/loc_acc"] == pytest.approx(res[f"{kind}/loc_acc"])
            values.add(res[f"{kind}/loc_acc"])
    assert len(values) > 1  # the thresholds give different counts: the comparison can fail


# ----------------------------------------------------------------------------- batch values
def _with(data, key, index, value):
    out = {k: v.copy() for k, v in data.items()}
    out[key][index] = value
    return out


BAD_BATCHES = [  # (key, index, value, message): the first offending entry, named
    ("label", 3, NUM_CLASSES,
     r"batch 0 of the iterator: batch\['label'\] must lie in \[0, 5\) "
     r"\(M = settings.num_classes\), got batch\['label'\]\[3\] = 5"),
    ("label", 0, -1, r"batch\['label'\]\[0\] = -1"),
    ("boxes", (2, 0), [9, 1, 3, 6],
     r"batch\['boxes'\] must satisfy x0 <= x1 and y0 <= y1, got batch\['boxes'\]\[2, 0\] = "
     r"\[9, 1, 3, 6\]"),
    ("boxes", (2, 0), [1, 6, 3, 2], r"x0 <= x1 and y0 <= y1, got batch\['boxes'\]\[2, 0\]"),
    ("boxes", (1, 0), [0, 0, SIZE, 5],
     r"0 <= x0 <= x1 < W = 16 and 0 <= y0 <= y1 < H = 16 .*batch\['boxes'\]\[1, 0\] = "
     r"\[0, 0, 16, 5\]"),
    ("boxes", (1, 0), [-1, 0, 3, 5], r"inside the 16 x 16 image.*\[-1, 0, 3, 5\]"),
    ("boxes", (4, 0), [0, 2, 3, SIZE], r"batch\['boxes'\]\[4, 0\] = \[0, 2, 3, 16\]"),
]


@pytest.mark.parametrize("key, index, value, match", BAD_BATCHES)
def test_bad_batch_values_raise_instead_of_numbers(tiny, key, index, value, match):
    """The measured bug: labels == M or x0 > x1 returned localisation numbers (MaxBoxAccV2
    0.2 -> 0.0), silently. Now the host check names the key, the index and the value."""
    model, variables, data = tiny
    with pytest.raises(ValueError, match=match):
        driver.evaluate(make_config(), model, variables, [_with(data, key, index, value)],
                        num_devices=1)


def test_one_based_labels_raise(tiny):
    model, variables, data = tiny
    shifted = _with(data, "label", 7, NUM_CLASSES - 1)
    shifted["label"] = shifted["label"] + 1
    with pytest.raises(ValueError, match=r"batch\['label'\]\[\d\] = 5"):
        driver.evaluate(make_config(), model, variables, [shifted], num_devices=1)


def test_error_names_the_batch_of_the_iterator(tiny):
    model, variables, data = tiny
    batches = split_batches(data, 4)
    batches[2] = _with(batches[2], "label", 1, 7)
    with pytest.raises(ValueError, match=r"^batch 2 of the iterator: .*\['label'\]\[1\] = 7"):
        driver.evaluate(make_config(), model, variables, batches, num_devices=1)


def test_padding_rows_are_not_checked(tiny, one_batch_results):
    """Examples with valid False and boxes with box_valid False count nothing: any value."""
    model, variables, data = tiny
    padded = {k: np.concatenate([v, v[:2]]) for k, v in data.items()}
    padded["valid"][-2:] = False
    padded["label"][-2:] = [NUM_CLASSES, -3]
    padded["boxes"][-2:, 0] = [[9, 9, 1, 1], [-5, 0, 40, 3]]
    off = ~padded["box_valid"][:, 1]
    padded["boxes"][off, 1] = [12, 3, 2, 99]
    res = driver.evaluate(make_config(), model, variables, [padded], num_devices=1)
    assert res == pytest.approx(one_batch_results, rel=1e-6)


@pytest.mark.parametrize("change, match", [
    (lambda d: {**d, "image": d["image"][:, :, :, 0]},
     r"batch\['image'\] must have shape \[10, \?, \?, \?\].*got \(10, 16, 16\)"),
    (lambda d: {**d, "image": d["image"][:9]},
     r"batch\['image'\] must have shape \[10, \?, \?, \?\].*got \(9, 16, 16, 1\)"),
    (lambda d: {**d, "label": d["label"][:9]}, r"batch\['label'\] must have shape \[10\]"),
    (lambda d: {**d, "boxes": d["boxes"][..., :3]},
     r"batch\['boxes'\] must have shape \[10, 2, 4\].*got \(10, 2, 3\)"),
    (lambda d: {**d, "box_valid": d["box_valid"][:, :1]},
     r"batch\['box_valid'\] must have shape \[10, 2\]"),
    (lambda d: {**d, "label": d["label"].astype(np.float32)},
     r"batch\['label'\] must be an integer array, got dtype float32"),
    (lambda d: {**d, "boxes": d["boxes"] + 0.5},
     r"batch\['boxes'\] must be an integer array, got dtype float64"),
    (lambda d: _with({**d, "box_valid": d["box_valid"].astype(np.int32)}, "box_valid",
                     (6, 1), 2),
     r"batch\['box_valid'\] must be a bool mask \(0 or 1\), got batch\['box_valid'\]\[6, 1\] "
     r"= 2"),
    (lambda d: _with({**d, "valid": d["valid"].astype(np.float32)}, "valid", 8, 0.5),
     r"batch\['valid'\] must be a bool mask \(0 or 1\), got batch\['valid'\]\[8\] = 0.5"),
])
def test_bad_batch_shapes_and_masks_raise(tiny, change, match):
    model, variables, data = tiny
    with pytest.raises(ValueError, match=match):
        driver.evaluate(make_config(), model, variables, [change(data)], num_devices=1)


def test_model_classes_must_match_num_classes(tiny):
    model, variables, data = tiny
    with pytest.raises(ValueError, match=r"the model has 5 classes \(logits \[B, M\]\) but "
                                         r"settings.num_classes = 6"):
        driver.evaluate(make_config(num_classes=6), model, variables, [data], num_devices=1)


@pytest.mark.parametrize("key, index, value, match", [
    ("box_labels", (0, 0), 3,
     r"batch\['box_labels'\] must lie in \[0, 3\) .*got batch\['box_labels'\]\[0, 0\] = 3"),
    ("labels", (1, 2), 0.5, r"batch\['labels'\] must be a bool mask .*\[1, 2\] = 0.5"),
    ("label", 5, 3, r"batch\['label'\]\[5\] = 3"),
])
def test_bad_multi_label_batch_values_raise(key, index, value, match):
    model = TinyNet(3)
    variables = tiny_variables(model, channels=3)
    data = _multi_label_data()
    data["box_labels"][~data["box_valid"]] = -1  # what the composers write for padding
    with pytest.raises(ValueError, match=match):
        driver.evaluate(make_config(num_classes=3, multi_label=True), model, variables,
                        [_with(data, key, index, value)], num_devices=1)
