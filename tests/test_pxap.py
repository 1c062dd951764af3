"""PxAP evaluator (``evaluation.pxap``): the eval step's pixel histograms equal np.histogram of
the same score maps, padded rows count nothing, and the pixel-IoU threshold is chosen on
validation as ``thresholds.select`` does."""
import numpy as np
import pytest

from infocam_jax.evaluation import forward, pxap, thresholds
from infocam_jax.metrics import pxap as pxap_metrics
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
    edges = pxap_metrics.bin_edges(settings.box_thresholds)
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
    assert res["cam/pxap"] == pytest.approx(pxap_metrics.average_precision(*_numpy_histograms(
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


def test_two_devices_sum_to_one_devices_counts(model_and_variables):
    """Two simulated CPU devices (subprocess), batches of 3 padded to 4: the same histograms."""
    import json
    import os
    import pathlib
    import subprocess
    import sys
    import textwrap
    repo = pathlib.Path(__file__).resolve().parents[1]
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(repo / 'tests')!r})
        import jax
        assert jax.local_device_count() == 2, jax.devices()
        import test_evaluate as te, test_pxap as tp
        from infocam_jax.evaluation import pxap
        model = te.TinyNet(te.NUM_CLASSES)
        data = tp._mask_data(7, seed=5)
        batches = [{{k: v[i:i + 3] for k, v in data.items()}} for i in range(0, 7, 3)]
        c = pxap.evaluate_counts(tp._settings(), model, te.tiny_variables(model), batches,
                                 num_devices=2)
        print("COUNTS" + json.dumps([c.positive.tolist(), c.negative.tolist()]))
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("COUNTS")][-1]
    positive, negative = json.loads(line[len("COUNTS"):])
    model, variables = model_and_variables
    one = pxap.evaluate_counts(_settings(), model, variables, [_mask_data(7, seed=5)],
                               num_devices=1)
    np.testing.assert_array_equal(positive, one.positive)
    np.testing.assert_array_equal(negative, one.negative)
