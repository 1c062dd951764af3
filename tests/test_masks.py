"""evaluation.masks (PxAP pixel counts) against plain NumPy statements of the WSOL protocol."""
import chex
import jax
import numpy as np
import pytest
from jax import lax

from infocam_jax.metrics import pxap


def np_histograms(scores, foreground, ignore, thresholds):
    """np.histogram over the protocol's edges (thresholds, 1, 2, 3), float64 scores."""
    edges = np.append(np.asarray(thresholds, np.float64), [1.0, 2.0, 3.0])
    scores = np.asarray(scores, np.float64)
    pos = np.histogram(scores[foreground], bins=edges)[0]
    neg = np.histogram(scores[~foreground & ~ignore], bins=edges)[0]
    return pos, neg


def np_ap(scores, foreground, ignore, thresholds):
    """AP written per threshold: tp/fp = pixels scoring >= each edge, from the top edge down."""
    edges = np.append(np.asarray(thresholds, np.float64), [1.0, 2.0])[::-1]
    scores = np.asarray(scores, np.float64)
    pos, neg = scores[foreground], scores[~foreground & ~ignore]
    tp = np.array([(pos >= e).sum() for e in edges], np.float64)
    fp = np.array([(neg >= e).sum() for e in edges], np.float64)
    tp = np.concatenate([[0.0], tp])  # the top bin [2, 3) is empty
    fp = np.concatenate([[0.0], fp])
    ap = 0.0
    for j in range(1, tp.size):
        if tp[j] + fp[j] > 0:
            ap += tp[j] / (tp[j] + fp[j]) * (tp[j] - tp[j - 1]) / pos.size
    return ap


def random_case(seed, shape=(3, 16, 20), interval=0.01):
    rng = np.random.default_rng(seed)
    thresholds = np.arange(0, 1, interval)
    scores = rng.random(shape).astype(np.float32)
    # Scores on and next to the bin edges, and the extremes 0 and 1.
    edges = thresholds.astype(np.float32)
    picks = rng.choice(edges, 20)
    flat = scores.reshape(-1)
    flat[:20] = picks
    flat[20:40] = np.nextafter(picks, np.float32(0))
    flat[40:60] = np.nextafter(picks, np.float32(1))
    flat[60], flat[61] = 0.0, 1.0
    foreground = rng.random(shape) < 0.4
    ignore = (rng.random(shape) < 0.2) & ~foreground
    return scores, foreground, ignore, thresholds


class TestScoreBins:
    @pytest.mark.parametrize("interval", [0.01, 0.001, 0.05, 0.3])
    def test_bins_equal_float64_histogram_bins(self, interval):
        scores, _, _, thresholds = random_case(0, interval=interval)
        edges = np.append(thresholds, [1.0, 2.0, 3.0])
        expected = np.digitize(scores.astype(np.float64), edges) - 1  # e_k <= s < e_{k+1}
        np.testing.assert_array_equal(np.asarray(pxap.score_bins(scores, thresholds)),
                                      expected)
        np.testing.assert_array_equal(pxap.host_score_bins(scores, thresholds), expected)

    def test_one_falls_in_bin_t(self):
        thresholds = np.arange(0, 1, 0.1)
        assert int(pxap.score_bins(np.float32(1.0), thresholds)) == thresholds.size
        assert int(pxap.host_score_bins(1.0, thresholds)) == thresholds.size

    @pytest.mark.parametrize("bad", [[], [0.5, 0.2], [0.0, 1.0], [-0.1, 0.5]])
    def test_bad_thresholds(self, bad):
        with pytest.raises(ValueError, match="thresholds"):
            pxap.bin_edges(bad)


class TestPixelCounts:
    @pytest.mark.parametrize("jit", [False, True])
    @pytest.mark.parametrize("seed", [0, 1])
    def test_histograms_equal_numpy(self, seed, jit):
        scores, fg, ignore, thresholds = random_case(seed)
        fn = lambda s, f, i: pxap.pixel_counts(s, f, i, thresholds)  # noqa: E731
        counts = (jax.jit(fn) if jit else fn)(scores, fg, ignore)
        pos, neg = np_histograms(scores, fg, ignore, thresholds)
        np.testing.assert_array_equal(np.asarray(counts.positive), pos)
        np.testing.assert_array_equal(np.asarray(counts.negative), neg)

    def test_padding_rows_count_zero_times(self):
        scores, fg, ignore, thresholds = random_case(2, shape=(4, 8, 8))
        valid = np.array([True, False, True, False])
        masked = pxap.pixel_counts(scores, fg, ignore, thresholds, valid)
        subset = pxap.pixel_counts(scores[valid], fg[valid], ignore[valid], thresholds)
        chex.assert_trees_all_equal(masked, subset)

    def test_merge_and_psum_equal_whole(self):
        scores, fg, ignore, thresholds = random_case(3, shape=(4, 8, 8))
        whole = pxap.pixel_counts(scores, fg, ignore, thresholds)
        halves = [pxap.pixel_counts(scores[s], fg[s], ignore[s], thresholds)
                  for s in (slice(0, 2), slice(2, 4))]
        chex.assert_trees_all_equal(halves[0].merge(halves[1]), whole)
        shards = jax.vmap(
            lambda s, f, i: lax.psum(pxap.pixel_counts(s, f, i, thresholds), "d"),
            axis_name="d")(scores.reshape(2, 2, 8, 8), fg.reshape(2, 2, 8, 8),
                           ignore.reshape(2, 2, 8, 8))
        np.testing.assert_array_equal(np.asarray(shards.positive[0]), whole.positive)
        np.testing.assert_array_equal(np.asarray(shards.negative[1]), whole.negative)

    def test_update_from_empty(self):
        scores, fg, ignore, thresholds = random_case(4)
        counts = pxap.PixelCounts.empty(thresholds).update(scores, fg, ignore)
        chex.assert_trees_all_equal(counts, pxap.pixel_counts(scores, fg, ignore, thresholds))

    def test_shape_errors(self):
        scores, fg, ignore, thresholds = random_case(5)
        with pytest.raises(ValueError, match="foreground"):
            pxap.pixel_counts(scores, fg[:1], ignore, thresholds)
        with pytest.raises(ValueError, match="valid"):
            pxap.pixel_counts(scores, fg, ignore, thresholds, np.ones(2, bool))
        with pytest.raises(ValueError, match="rank 3"):
            pxap.pixel_counts(scores[0], fg[0], ignore[0], thresholds)


class TestAveragePrecision:
    @pytest.mark.parametrize("seed,interval", [(0, 0.01), (1, 0.001), (2, 0.1)])
    def test_equals_per_threshold_statement(self, seed, interval):
        scores, fg, ignore, thresholds = random_case(seed, interval=interval)
        got = pxap.pxap(scores, fg, ignore, thresholds)
        np.testing.assert_allclose(got, np_ap(scores, fg, ignore, thresholds), rtol=1e-12)

    def test_perfect_map_is_one(self):
        _, fg, ignore, thresholds = random_case(6)
        assert pxap.pxap(fg.astype(np.float32), fg, ignore, thresholds) == 1.0

    @pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
    def test_constant_map_is_the_foreground_fraction(self, value):
        _, fg, ignore, thresholds = random_case(7)
        scores = np.full(fg.shape, value, np.float32)
        expected = fg.sum() / (fg.sum() + (~fg & ~ignore).sum())
        np.testing.assert_allclose(pxap.pxap(scores, fg, ignore, thresholds), expected,
                                   rtol=1e-12)

    def test_result_curve(self):
        scores, fg, ignore, thresholds = random_case(8)
        result = pxap.pixel_counts(scores, fg, ignore, thresholds).result()
        assert result["recall"][-1] == 1.0
        assert result["precision"].shape == (thresholds.size + 2,)

    def test_no_foreground_raises(self):
        scores, fg, ignore, thresholds = random_case(9)
        with pytest.raises(ValueError, match="foreground"):
            pxap.pxap(scores, np.zeros_like(fg), ignore, thresholds)
