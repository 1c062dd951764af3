"""PxAP evaluator (``evaluation.pxap``): the eval step's pixel histograms equal np.histogram of
the same score maps, padded rows count nothing, and the pixel-IoU threshold is chosen on
validation as ``thresholds.select`` does."""
import numpy as np
import pytest

from infocam_jax.evaluation import forward, masks, pxap, thresholds
from infocam_jax.evaluation.settings import EvalSettings

import test_evaluate as te  # noqa: E402  (shared tiny models and data)

KINDS = ("cam", "infocam")


def _settings():
    return EvalSettings(image_size=(te.SIZE, te.SIZE), map_kinds=KINDS, num_box_thresholds=10,
                        num_classes=te.NUM_CLASSES)


def _mask_data(n, seed):
    data = te.make_data(n, seed=seed)
    rng = np.random.default_rng(seed + 100)
    data["mask"] = rng.uniform(size=(n, te.SIZE, te.SIZE)) < 0.3
    data["ignore"] = rng.uniform(size=(n, te.SIZE, te.SIZE)) < 0.1
    return data


def _numpy_histograms(settings, model, variables, data):
    """float64 scores of the same maps, binned by np.histogram over the protocol's edges."""
    out = forward.predict_maps(settings, model, variables, data["image"], data["label"])
    edges = masks.bin_edges(settings.box_thresholds)
    fg = data["mask"]
    counted = ~(data["ignore"] & ~fg) & data["valid"][:, None, None]
    result = []
    for kind in KINDS:
        s = np.asarray(out["scoremaps"][kind], np.float64)
        result.append((np.histogram(s[counted & fg], edges)[0],
                       np.histogram(s[counted & ~fg], edges)[0]))
    return result


@pytest.fixture(scope="module")
def model_and_variables():
    model = te.TinyNet(te.NUM_CLASSES)
    return model, te.tiny_variables(model)


def test_histograms_match_numpy_and_padding_counts_nothing(model_and_variables):
    model, variables = model_and_variables
    settings = _settings()
    data = _mask_data(6, seed=0)
    data["valid"][-2:] = False
    counts = pxap.evaluate_counts(settings, model, variables, [data], num_devices=1)
    for i, (pos, neg) in enumerate(_numpy_histograms(settings, model, variables, data)):
        np.testing.assert_array_equal(counts.positive[i], pos)
        np.testing.assert_array_equal(counts.negative[i], neg)
    res = pxap.finalize(settings, counts)
    assert res["cam/pxap"] == pytest.approx(masks.average_precision(*_numpy_histograms(
        settings, model, variables, data)[0]))


def test_selection_on_validation(model_and_variables):
    model, variables = model_and_variables
    settings = _settings()
    val, test = _mask_data(4, seed=1), _mask_data(4, seed=2)
    out = pxap.evaluate(settings, model, variables, {"validation": [val], "test": [test]},
                        num_devices=1)
    counts = {s: pxap.evaluate_counts(settings, model, variables, [d], num_devices=1)
              for s, d in (("validation", val), ("test", test))}
    for i, kind in enumerate(KINDS):
        pos, neg = (np.asarray(c, np.float64) for c in (counts["test"].positive[i],
                                                        counts["test"].negative[i]))
        tp = np.array([pos[j:].sum() for j in range(10)])
        fp = np.array([neg[j:].sum() for j in range(10)])
        np.testing.assert_allclose(pxap.piou_curve(counts["test"], i), tp / (pos.sum() + fp))
        want = thresholds.select(settings.box_thresholds, pxap.piou_curve(counts["validation"], i),
                                 pxap.piou_curve(counts["test"], i))
        assert out["test"][f"{kind}/piou/valsel"] == want["test"]
        assert out["test"][f"{kind}/piou/valsel_threshold"] == want["threshold"]
        assert 0.0 <= out["validation"][f"{kind}/pxap"] <= 1.0


def test_missing_masks_and_multi_label_raise(model_and_variables):
    model, variables = model_and_variables
    with pytest.raises(ValueError, match="mask"):
        pxap.evaluate_counts(_settings(), model, variables, [te.make_data(2)], num_devices=1)
    with pytest.raises(ValueError, match="multi_label"):
        pxap.init_counts(EvalSettings(image_size=(8, 8), multi_label=True, map_kinds=KINDS))
