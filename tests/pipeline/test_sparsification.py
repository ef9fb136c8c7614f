"""Sparsification curves, AUSE and AURG against a NumPy transcription of mono-uncertainty's compute_aucs."""

import numpy as np
import pytest
from support.sparsification_reference import reference_curves, reference_scores

from tiekd.pipeline.sparsification import (
    REMOVED_FRACTIONS,
    SPARSIFICATION_METRICS,
    UNCERTAINTY_METRIC_NAMES,
    ause_aurg,
    image_sparsification,
    mean_curves,
    sparsification_curves,
)


def noisy_image(n=997, seed=0):
    """Depths in metres with errors of both signs; the uncertainty half-follows the error."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(2.0, 70.0, n)
    pred = gt * np.exp(rng.normal(0.0, 0.2, n))
    uncertainty = np.abs(np.log(pred / gt)) + rng.uniform(0.0, 0.3, n)
    return pred, gt, uncertainty


def tied(uncertainty, levels):
    """The uncertainty rounded to ``levels`` values: an untrained student's entropy has many ties."""
    low, high = uncertainty.min(), uncertainty.max()
    return np.round((uncertainty - low) / (high - low) * (levels - 1))


def check_against_compute_aucs(pred, gt, uncertainty):
    curves = sparsification_curves(pred, gt, uncertainty)
    for name in SPARSIFICATION_METRICS:
        model, oracle = reference_curves(pred, gt, uncertainty, name)
        np.testing.assert_allclose(curves[name]["model"], model, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(curves[name]["oracle"], oracle, rtol=1e-12, atol=1e-15)
    scores = ause_aurg(curves)
    assert tuple(scores) == UNCERTAINTY_METRIC_NAMES
    assert scores == pytest.approx(reference_scores(pred, gt, uncertainty), rel=1e-11, abs=1e-14)
    return scores


class TestAgainstComputeAucs:
    @pytest.mark.parametrize("seed, n", [(0, 997), (1, 150), (2, 7), (4, 51), (5, 1)])
    def test_continuous_uncertainty(self, seed, n):
        scores = check_against_compute_aucs(*noisy_image(n, seed))
        if n > 100:
            assert all(scores[f"ause_{name}"] > 0 for name in SPARSIFICATION_METRICS[:2])

    @pytest.mark.parametrize("levels", [2, 5, 40])
    def test_tied_uncertainty_keeps_every_pixel_at_the_threshold(self, levels):
        pred, gt, uncertainty = noisy_image(600, 6)
        check_against_compute_aucs(pred, gt, tied(uncertainty, levels))

    def test_constant_uncertainty_gives_aurg_of_the_end_point(self):
        """All ties: every subset is every pixel, so AURG = metric / 100 (the end point at x = 1)."""
        pred, gt, _ = noisy_image(300, 7)
        scores = check_against_compute_aucs(pred, gt, np.full(300, 2.5))
        rmse = np.sqrt(np.mean((pred - gt) ** 2))
        assert scores["aurg_rmse"] == pytest.approx(rmse / 100, rel=1e-12)

    def test_entropy_ranking_like_the_error_gives_ause_zero(self):
        """GT constant and pred >= GT: squared, relative and ratio errors all rank like pred - gt."""
        rng = np.random.default_rng(3)
        gt = np.full(500, 10.0)
        pred = gt + rng.uniform(0.0, 6.0, 500)
        scores = check_against_compute_aucs(pred, gt, np.log1p(pred - gt))
        assert [scores[f"ause_{name}"] for name in SPARSIFICATION_METRICS] == pytest.approx([0, 0, 0], abs=1e-15)
        assert all(scores[f"aurg_{name}"] > 0.01 for name in SPARSIFICATION_METRICS)

    def test_uncertainty_against_the_error_is_worse_than_random(self):
        pred, gt, _ = noisy_image()
        scores = ause_aurg(sparsification_curves(pred, gt, -np.abs(pred - gt)))
        assert scores["aurg_rmse"] < 0 and scores["aurg_abs_rel"] < 0
        assert scores["ause_rmse"] > -scores["aurg_rmse"]

    def test_fractions_end_at_one_with_metric_zero(self):
        assert REMOVED_FRACTIONS[[0, 1, 49, 50]] == pytest.approx([0.0, 0.02, 0.98, 1.0])
        curves = sparsification_curves(*noisy_image(200, 8))
        assert all(curves[name]["model"][-1] == curves[name]["oracle"][-1] == 0 for name in SPARSIFICATION_METRICS)


class TestMaps:
    def test_only_the_pixels_depth_metrics_scores(self):
        pred, gt, uncertainty = (a.reshape(12, 50) for a in noisy_image(600, 4))
        gt[0, :] = 0.0  # no LiDAR
        gt[1, :5] = 95.0  # beyond max_depth
        pred[2, 4] = np.nan  # counts as min_depth, as in depth_metrics
        crop = np.ones(gt.shape, bool)
        crop[:, 45:] = False
        valid = (gt > 1e-3) & (gt < 80) & crop
        nan_uncertainty = uncertainty.copy()
        nan_uncertainty[2, 3] = np.nan  # counts as the most uncertain pixel: one above the largest
        others = valid.copy()
        others[2, 3] = False
        uncertainty[2, 3] = uncertainty[others].max() + 1
        curves = image_sparsification(pred, gt, nan_uncertainty, min_depth=1e-3, max_depth=80.0, crop=crop)
        pred = np.clip(np.nan_to_num(pred, nan=1e-3), 1e-3, 80.0)
        expected = sparsification_curves(pred[valid], gt[valid], uncertainty[valid])
        for name in SPARSIFICATION_METRICS:
            np.testing.assert_array_equal(curves[name]["model"], expected[name]["model"])
        everything = np.ones(gt.shape, bool)
        assert image_sparsification(pred, np.zeros_like(gt), uncertainty, min_depth=1e-3, max_depth=80.0, crop=everything) is None

    def test_mean_curves(self):
        images = [sparsification_curves(*noisy_image(300, seed)) for seed in range(3)]
        mean = mean_curves(images)
        for name in SPARSIFICATION_METRICS:
            np.testing.assert_allclose(mean[name]["oracle"], np.mean([c[name]["oracle"] for c in images], axis=0))
            assert len(mean[name]["model"]) == 51 and isinstance(mean[name]["model"][0], float)
