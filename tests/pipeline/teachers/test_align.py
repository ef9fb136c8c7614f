"""Robust per-frame alignment of relative teacher outputs (pipeline/teachers/align.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tiekd.pipeline.errors import TeacherError
from tiekd.pipeline.teachers.align import aligned_depth, fit_alignment


def scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 20.0, (30, 40))
    return rng, depth


def test_an_affine_inverse_depth_is_recovered_exactly():
    _, depth = scene()
    prediction = 2.5 / depth + 0.3  # 1 / depth = prediction / 2.5 - 0.12
    fit = fit_alignment(prediction, depth, kind="relative-inverse", min_depth=0.1, max_depth=80, what="f")
    assert (fit.scale, fit.shift) == pytest.approx((1 / 2.5, -0.3 / 2.5), rel=1e-9)
    np.testing.assert_allclose(aligned_depth(prediction, fit, kind="relative-inverse"), depth, rtol=1e-9)


def test_outliers_sky_and_missing_gt_do_not_move_the_fit():
    rng, depth = scene(1)
    prediction = 4.0 * depth - 1.0  # relative depth
    reference = depth.copy()
    reference[rng.random(depth.shape) < 0.5] = 0  # sparse GT
    outliers = rng.random(depth.shape) < 0.05
    reference[outliers] = rng.uniform(1, 20, int(outliers.sum()))  # wrong measurements
    reference[:3] = 200.0  # beyond max depth (sky): left out
    fit = fit_alignment(prediction, reference, kind="relative-depth", min_depth=0.1, max_depth=80, what="f")
    assert (fit.scale, fit.shift) == pytest.approx((0.25, 0.25), rel=1e-6)
    plain = np.polyfit(prediction[reference > 0], reference[reference > 0], 1)  # without the trimming
    assert abs(plain[0] - 0.25) > 1e-3


def test_too_few_reference_pixels_is_one_line():
    _, depth = scene()
    with pytest.raises(TeacherError, match="frame 7 has 0 reference pixels inside the depth range"):
        fit_alignment(depth, np.zeros_like(depth), kind="relative-depth", min_depth=0.1, max_depth=80, what="frame 7")
