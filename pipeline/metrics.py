"""Depth-evaluation metrics of the KITTI and NYU protocols (method.md section 8).

One predicted depth map is compared with its ground truth by :func:`depth_metrics`; the scores of a
test set are the mean over images of the per-image scores (:func:`mean_metrics`), as in the BTS and
AdaBins evaluation scripts that TIE-KD's numbers follow.

A pixel is evaluated when its ground truth lies strictly inside (min_depth, max_depth) and inside
the evaluation crop, a mask the caller takes from the dataset's description (Garg, Eigen or none:
:meth:`tiekd.data.description.DatasetDescription.eval_mask`); the range is the dataset's too. The prediction is clamped to
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

# Canonical order of the metrics in tables, logs and result files.
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3")

# Threshold accuracy: ratio bound 1.25 raised to the powers 1, 2, 3 for d1, d2, d3.
DELTA_BASE = 1.25


def valid_mask(gt: np.ndarray, *, min_depth: float, max_depth: float, crop: np.ndarray) -> np.ndarray:
    """Pixels to evaluate: ground truth strictly inside (min_depth, max_depth) and inside the crop
    mask (bool, the shape of ``gt``)."""
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
    min_depth: float,
    max_depth: float,
    crop: np.ndarray,
) -> dict[str, float] | None:
    """Metrics of one predicted depth map against its ground truth.

    Args:
        pred: predicted depth (H, W) in metres; clamped to [min_depth, max_depth], NaN -> min_depth.
        gt: ground-truth depth (H, W) in metres; 0 (or anything outside the range) = no measurement.
        min_depth, max_depth: evaluated ground-truth range in metres (exclusive at both ends).
        crop: bool (H, W) mask of the evaluation crop (the dataset's ``eval_mask``, computed on this
            map or on the full-size image and cut to it, the BTS convention).

    Returns:
        ``{name: value}`` in the order of :data:`METRIC_NAMES`, or None when no pixel is valid.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(f"pred and gt must be (H, W) maps of one shape, got {pred.shape} and {gt.shape}")
    valid = valid_mask(gt, min_depth=min_depth, max_depth=max_depth, crop=crop)
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
