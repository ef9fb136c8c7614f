"""Depth-evaluation metrics of the KITTI protocol (method.md section 8).

One predicted depth map is compared with its ground truth by :func:`depth_metrics`; the scores of a
test set are the mean over images of the per-image scores (:func:`mean_metrics`), as in the BTS and
AdaBins evaluation scripts that TIE-KD's numbers follow.

A pixel is evaluated when its ground truth lies strictly inside (min_depth, max_depth) and inside
the evaluation crop (:func:`crop_mask`: Garg, Eigen or none). The prediction is clamped to
[min_depth, max_depth] first; a NaN prediction counts as min_depth and an infinite one as the bound
on its side, as AdaBins' evaluate.py does (one NaN pixel would otherwise make the mean NaN). All arithmetic is in float64 so that a metric does not depend on the
dtype the caller happened to store the maps in.

Metrics, with d = predicted depth and g = ground-truth depth in metres over the N valid pixels:

- ``abs_rel``  = mean(|d - g| / g)
- ``sq_rel``   = mean((d - g)^2 / g)
- ``rmse``     = sqrt(mean((d - g)^2))                               (metres)
- ``rmse_log`` = sqrt(mean((ln d - ln g)^2))
- ``log10``    = mean(|log10 d - log10 g|)
- ``silog``    = 100 sqrt(mean(e^2) - mean(e)^2), e = ln d - ln g     (Eigen et al. 2014)
- ``d1, d2, d3`` = fraction of pixels with max(g / d, d / g) < 1.25, 1.25^2, 1.25^3
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from tiekd.pipeline.errors import ConfigError

# Canonical order of the metrics in tables, logs and result files.
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")

# KITTI evaluation depth range in metres (method.md section 8).
MIN_DEPTH = 1e-3
MAX_DEPTH = 80.0

# Threshold accuracy: ratio bound 1.25 raised to the powers 1, 2, 3 for d1, d2, d3.
DELTA_BASE = 1.25

# Crops as fractions (top, bottom, left, right) of the image height and width; row and column
# bounds are int(fraction * size), bottom and right exclusive. Garg et al. 2016 ("Unsupervised CNN
# for single view depth estimation") and Eigen et al. 2014, with the fractions written as in the
# BTS (bts_eval.py) and AdaBins (evaluate.py) evaluation scripts.
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
CROPS = {"garg": GARG_CROP, "eigen": EIGEN_CROP}
CROP_NAMES = ("garg", "eigen", "none")


def crop_mask(height: int, width: int, crop: str) -> np.ndarray:
    """Boolean (height, width) mask of the evaluation crop: ``"garg"``, ``"eigen"`` or ``"none"``."""
    mask = np.zeros((height, width), dtype=bool)
    if crop == "none":
        mask[:] = True
        return mask
    if crop not in CROPS:
        raise ConfigError(f"Unknown evaluation crop {crop!r}; pass --crop as one of {', '.join(CROP_NAMES)}.")
    top, bottom, left, right = CROPS[crop]
    mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


def _valid_mask(gt: np.ndarray, min_depth: float, max_depth: float, crop: str | np.ndarray) -> np.ndarray:
    """Pixels to evaluate: ground truth strictly inside (min_depth, max_depth) and inside the crop."""
    if isinstance(crop, str):
        crop = crop_mask(*gt.shape, crop)
    crop = np.asarray(crop)
    if crop.shape != gt.shape or crop.dtype != np.bool_:
        raise ValueError(f"crop mask must be a bool array of shape {gt.shape}, got {crop.dtype} {crop.shape}")
    with np.errstate(invalid="ignore"):
        return (gt > min_depth) & (gt < max_depth) & crop


def _errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """All metrics for 1-D float64 arrays of predicted and ground-truth depth (metres, all > 0)."""
    ratio = np.maximum(gt / pred, pred / gt)
    log_error = np.log(pred) - np.log(gt)
    # mean(e^2) - mean(e)^2 can round to a tiny negative number when e is constant.
    log_variance = max(np.mean(log_error**2) - np.mean(log_error) ** 2, 0.0)
    scores = {
        "abs_rel": np.mean(np.abs(pred - gt) / gt),
        "sq_rel": np.mean((pred - gt) ** 2 / gt),
        "rmse": np.sqrt(np.mean((pred - gt) ** 2)),
        "rmse_log": np.sqrt(np.mean(log_error**2)),
        "log10": np.mean(np.abs(np.log10(pred) - np.log10(gt))),
        "silog": 100.0 * np.sqrt(log_variance),
        "d1": np.mean(ratio < DELTA_BASE),
        "d2": np.mean(ratio < DELTA_BASE**2),
        "d3": np.mean(ratio < DELTA_BASE**3),
    }
    return {name: float(scores[name]) for name in METRIC_NAMES}


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    min_depth: float = MIN_DEPTH,
    max_depth: float = MAX_DEPTH,
    crop: str | np.ndarray = "garg",
) -> dict[str, float] | None:
    """Metrics of one predicted depth map against its ground truth.

    Args:
        pred: predicted depth (H, W) in metres; clamped to [min_depth, max_depth], NaN -> min_depth.
        gt: ground-truth depth (H, W) in metres; 0 (or anything outside the range) = no measurement.
        min_depth, max_depth: evaluated ground-truth range in metres (exclusive at both ends).
        crop: ``"garg"``, ``"eigen"``, ``"none"``, or a bool (H, W) mask computed by the caller
            (e.g. a Garg crop taken on the full-size image, the BTS/AdaBins convention).

    Returns:
        ``{name: value}`` in the order of :data:`METRIC_NAMES`, or None when no pixel is valid.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(f"pred and gt must be (H, W) maps of one shape, got {pred.shape} and {gt.shape}")
    valid = _valid_mask(gt, min_depth, max_depth, crop)
    if not valid.any():
        return None
    return _errors(np.clip(np.nan_to_num(pred[valid], nan=min_depth), min_depth, max_depth), gt[valid])


def mean_metrics(per_image: Iterable[Mapping[str, float] | None]) -> dict[str, float]:
    """Mean of each metric over images, skipping images without valid pixels (None).

    Raises ValueError when no image has a valid pixel: an empty mean is not a score.
    """
    scored = [scores for scores in per_image if scores is not None]
    if not scored:
        raise ValueError("no image has a valid ground-truth pixel, so there is nothing to average")
    return {name: float(np.mean([scores[name] for scores in scored], dtype=np.float64)) for name in METRIC_NAMES}
