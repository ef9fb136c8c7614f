"""Tests of tiekd.pipeline.metrics against hand-computed answers and an independent float64 version."""

import math

import numpy as np
import pytest

from tiekd.data.kitti import KITTI
from tiekd.pipeline.metrics import METRIC_NAMES, depth_metrics, mean_metrics

KB_SHAPE = (352, 1216)


def metrics(pred, gt, *, crop="garg", min_depth=KITTI.min_depth, max_depth=KITTI.max_depth):
    """depth_metrics with KITTI's depth range and a crop of KITTI named (on the map) or given as a mask."""
    mask = KITTI.eval_mask(crop, *np.shape(gt)) if isinstance(crop, str) else crop
    return depth_metrics(pred, gt, min_depth=min_depth, max_depth=max_depth, crop=mask)


def reference_metrics(pred, gt):
    """BTS-style compute_errors written out independently, float64, on already-valid 1-D arrays."""
    pred, gt = pred.astype(np.float64), gt.astype(np.float64)
    thresh = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    return {
        "abs_rel": np.mean(np.abs(gt - pred) / gt),
        "sq_rel": np.mean(((gt - pred) ** 2) / gt),
        "rmse": np.sqrt(((gt - pred) ** 2).mean()),
        "rmse_log": np.sqrt(((np.log(gt) - np.log(pred)) ** 2).mean()),
        "log10": np.mean(np.abs(np.log10(gt) - np.log10(pred))),
        "silog": np.sqrt(np.mean(err**2) - np.mean(err) ** 2) * 100,
        "d1": (thresh < 1.25).mean(),
        "d2": (thresh < 1.25**2).mean(),
        "d3": (thresh < 1.25**3).mean(),
    }


class TestDepthMetrics:
    def test_perfect_prediction(self):
        gt = np.linspace(1.0, 70.0, 24).reshape(4, 6)
        scores = metrics(gt.copy(), gt, crop="none")
        assert tuple(scores) == METRIC_NAMES
        for name in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
            assert scores[name] == pytest.approx(0.0, abs=1e-12)
        assert scores["d1"] == scores["d2"] == scores["d3"] == 1.0

    def test_prediction_twice_the_truth(self):
        gt = np.linspace(1.0, 30.0, 24).reshape(4, 6)
        scores = metrics(2 * gt, gt, crop="none")
        assert scores["abs_rel"] == pytest.approx(1.0)
        assert scores["rmse_log"] == pytest.approx(math.log(2))
        assert scores["log10"] == pytest.approx(math.log10(2))
        # A constant log error is pure scale: the scale-invariant error is zero.
        assert scores["silog"] == pytest.approx(0.0, abs=1e-6)
        # Ratio 2 fails every threshold, 1.25^3 = 1.953125 included.
        assert scores["d1"] == scores["d2"] == scores["d3"] == 0.0

    def test_two_pixels_by_hand(self):
        gt = np.array([[2.0, 4.0]])
        pred = np.array([[1.0, 5.0]])
        scores = metrics(pred, gt, crop="none")
        expected = {
            "abs_rel": (1 / 2 + 1 / 4) / 2,
            "sq_rel": (1 / 2 + 1 / 4) / 2,
            "rmse": 1.0,
            "rmse_log": math.sqrt((math.log(2) ** 2 + math.log(1.25) ** 2) / 2),
            "log10": (math.log10(2) + math.log10(1.25)) / 2,
            # Two values: the standard deviation is half their difference, (ln 2 + ln 1.25) / 2.
            "silog": 50 * math.log(2.5),
            # Ratios 2 and 1.25; the bounds are strict, so 1.25 fails d1 but passes d2.
            "d1": 0.0,
            "d2": 0.5,
            "d3": 0.5,
        }
        assert scores == pytest.approx(expected, rel=1e-12)

    def test_matches_independent_reference(self):
        rng = np.random.default_rng(0)
        gt = rng.uniform(0.5, 45.0, size=(30, 40))  # pred stays below 80: no clamping
        pred = gt * rng.uniform(0.6, 1.6, size=gt.shape).astype(np.float32)
        scores = metrics(pred.astype(np.float32), gt.astype(np.float32), crop="none")
        reference = reference_metrics(pred.astype(np.float32).ravel(), gt.astype(np.float32).ravel())
        assert scores == pytest.approx(reference, rel=1e-9)

    def test_invalid_ground_truth_is_ignored(self):
        gt = np.array([[0.0, 3.0, 80.0], [np.nan, 6.0, 1e-3]])
        pred = np.array([[50.0, 3.3, 7.0], [9.0, 5.0, 11.0]])
        scores = metrics(pred, gt, crop="none")
        assert scores == pytest.approx(reference_metrics(np.array([3.3, 5.0]), np.array([3.0, 6.0])))

    def test_prediction_is_clamped(self):
        gt = np.array([[0.5, 79.0]])
        pred = np.array([[-4.0, 250.0]])
        scores = metrics(pred, gt, crop="none")
        assert scores == pytest.approx(reference_metrics(np.array([1e-3, 80.0]), np.array([0.5, 79.0])))

    def test_nan_prediction_counts_as_min_depth_as_in_adabins(self):
        # AdaBins evaluate.py: pred[isinf] = max_depth, pred[isnan] = min_depth; one NaN must not
        # turn the image's scores (and with them the test set's mean) into NaN.
        gt = np.array([[0.5, 79.0, 4.0, 6.0]])
        pred = np.array([[np.nan, np.inf, -np.inf, 5.0]])
        scores = metrics(pred, gt, crop="none")
        expected = reference_metrics(np.array([1e-3, 80.0, 1e-3, 5.0]), gt.ravel())
        assert all(math.isfinite(v) for v in scores.values())
        assert scores == pytest.approx(expected, rel=1e-12)
        assert mean_metrics([scores, metrics(gt, gt, crop="none")])["rmse"] == pytest.approx(expected["rmse"] / 2)

    def test_crop_string_and_mask(self):
        gt = np.full(KB_SHAPE, 10.0)
        pred = np.full(KB_SHAPE, 20.0)
        pred[KITTI.eval_mask("garg", *KB_SHAPE)] = 10.0
        assert metrics(pred, gt)["abs_rel"] == 0.0
        assert metrics(pred, gt, crop="eigen")["abs_rel"] > 0.0
        assert metrics(pred, gt, crop=KITTI.eval_mask("garg", *KB_SHAPE))["abs_rel"] == 0.0

    def test_depth_range_arguments(self):
        gt = np.array([[2.0, 8.0]])
        pred = np.array([[2.0, 20.0]])
        scores = metrics(pred, gt, max_depth=5.0, crop="none")
        assert scores["abs_rel"] == 0.0

    def test_no_valid_pixel_gives_none(self):
        gt = np.zeros((3, 4))
        assert metrics(np.ones((3, 4)), gt, crop="none") is None
        assert metrics(np.ones(KB_SHAPE), np.where(KITTI.eval_mask("garg", *KB_SHAPE), 0.0, 5.0)) is None

    def test_shape_mismatch(self):
        with pytest.raises(ValueError):
            metrics(np.ones((3, 4)), np.ones((4, 3)))
        with pytest.raises(ValueError):
            metrics(np.ones((3, 4)), np.ones((3, 4)), crop=np.ones((4, 3), dtype=bool))


class TestMeanMetrics:
    def test_mean_over_images_skips_none(self):
        first = dict.fromkeys(METRIC_NAMES, 1.0)
        second = dict.fromkeys(METRIC_NAMES, 4.0)
        assert mean_metrics([first, None, second]) == dict.fromkeys(METRIC_NAMES, 2.5)

    def test_mean_of_images_not_of_pixels(self):
        small = metrics(np.array([[2.0]]), np.array([[1.0]]), crop="none")
        large = metrics(np.full((2, 2), 1.0), np.full((2, 2), 1.0), crop="none")
        assert mean_metrics([small, large])["abs_rel"] == pytest.approx(0.5)

    def test_nothing_to_average(self):
        with pytest.raises(ValueError):
            mean_metrics([None, None])
