"""Sparsification curves, AUSE and AURG: does a DPM student's entropy rank its errors?

The standard measures of depth uncertainty (Ilg et al., ECCV 2018, "Uncertainty estimates and
multi-hypotheses networks for optical flow"; Poggi et al., CVPR 2020, "On the uncertainty of
self-supervised monocular depth estimation"). For one image, over its N valid pixels:

- sparsification curve: sort the pixels by uncertainty (most uncertain first), remove the first
  ``floor(f * N)`` of them for f = 0, 0.01, ..., 0.99 and compute the metric on the rest;
- oracle curve: the same, sorted by the metric's own per-pixel error (largest first);
- random curve: the metric of all pixels (removing pixels at random does not change it on average).

AUSE = area between the sparsification and the oracle curve, AURG = area between the random curve
and the sparsification curve (positive when the uncertainty is better than none), both by the
trapezoid rule over the removed fraction in [0, 0.99]. For each of RMSE (metres), AbsRel and
1 - d1; a test set's scores are the mean over images of the per-image scores.

Vectorised: one sort per ranking and cumulative sums over the sorted per-pixel errors give the
metric of every kept prefix at once, so a 352x1216 map costs four sorts, not 300 metric calls.
Ties in the uncertainty keep pixel order (stable sort); the oracle curve does not depend on ties.
"""

from __future__ import annotations

import numpy as np

from tiekd.pipeline.metrics import DELTA_BASE, valid_mask

SPARSIFICATION_STEPS = 100
"""Removed fractions 0, 1/100, ..., 99/100 of the valid pixels (Poggi et al. 2020)."""

REMOVED_FRACTIONS = np.arange(SPARSIFICATION_STEPS) / SPARSIFICATION_STEPS
"""The x axis of every curve, shape (100,): 0, 0.01, ..., 0.99."""

SPARSIFICATION_METRICS = ("rmse", "abs_rel", "d1")
"""Metrics of the curves; ``d1`` stands for 1 - d1 (the fraction of pixels with ratio >= 1.25),
so that lower is better for all three."""

CURVES = ("model", "oracle", "random")


def _pixel_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel error whose mean over kept pixels gives each metric (RMSE: before the root).

    Also the oracle's sort key per metric: squared error, relative error, and the ratio
    max(d/g, g/d) (a pixel counts against d1 when its ratio is >= 1.25, so the largest go first).
    """
    ratio = np.maximum(gt / pred, pred / gt)
    return {
        "rmse": ((pred - gt) ** 2, (pred - gt) ** 2),
        "abs_rel": (np.abs(pred - gt) / gt, np.abs(pred - gt) / gt),
        "d1": ((ratio >= DELTA_BASE).astype(np.float64), ratio),
    }


def _kept_counts(n_pixels: int) -> np.ndarray:
    """Pixels kept at each removed fraction: N - floor(k * N / 100), k = 0..99 (exact integers)."""
    steps = np.arange(SPARSIFICATION_STEPS, dtype=np.int64)
    return n_pixels - (steps * n_pixels) // SPARSIFICATION_STEPS


def _curve(errors: np.ndarray, order: np.ndarray, kept: np.ndarray, name: str) -> np.ndarray:
    """Metric of the pixels left after removing the first ones of ``order`` (most uncertain first).

    ``order`` sorts ``errors`` from most to least uncertain, so the kept pixels are a suffix: the
    reversed cumulative sum gives the sum over every suffix at once.
    """
    suffix_sums = np.cumsum(errors[order][::-1])[::-1]
    means = suffix_sums[len(errors) - kept] / kept
    return np.sqrt(means) if name == "rmse" else means


def sparsification_curves(pred: np.ndarray, gt: np.ndarray, uncertainty: np.ndarray) -> dict[str, dict]:
    """Curves of one image from 1-D float arrays of its valid pixels (depths in metres, > 0).

    Returns ``{metric: {"model": (100,), "oracle": (100,), "random": (100,)}}`` for each of
    :data:`SPARSIFICATION_METRICS`, x = :data:`REMOVED_FRACTIONS`.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    uncertainty = np.asarray(uncertainty, np.float64)
    if not (pred.shape == gt.shape == uncertainty.shape and pred.ndim == 1 and pred.size > 0):
        raise ValueError(f"need equal non-empty 1-D arrays, got {pred.shape}, {gt.shape}, {uncertainty.shape}")
    kept = _kept_counts(pred.size)
    by_uncertainty = np.argsort(-uncertainty, kind="stable")
    curves = {}
    for name, (errors, oracle_key) in _pixel_errors(pred, gt).items():
        model = _curve(errors, by_uncertainty, kept, name)
        oracle = _curve(errors, np.argsort(-oracle_key, kind="stable"), kept, name)
        curves[name] = {"model": model, "oracle": oracle, "random": np.full_like(model, model[0])}
    return curves


def trapezoid_area(curve: np.ndarray) -> float:
    """Area under a curve sampled at :data:`REMOVED_FRACTIONS` (trapezoid rule on [0, 0.99])."""
    step = 1.0 / SPARSIFICATION_STEPS
    return float(step * (curve.sum() - (curve[0] + curve[-1]) / 2))


def ause_aurg(curves: dict[str, dict]) -> dict[str, float]:
    """``{"ause_rmse", "ause_abs_rel", "ause_d1", "aurg_rmse", "aurg_abs_rel", "aurg_d1"}`` of one image."""
    scores = {}
    for name, curve in curves.items():
        model = trapezoid_area(curve["model"])
        scores[f"ause_{name}"] = model - trapezoid_area(curve["oracle"])
        scores[f"aurg_{name}"] = trapezoid_area(curve["random"]) - model
    return {key: scores[key] for key in UNCERTAINTY_METRIC_NAMES}


UNCERTAINTY_METRIC_NAMES = tuple(f"{kind}_{name}" for kind in ("ause", "aurg") for name in SPARSIFICATION_METRICS)
"""JSON keys of :func:`ause_aurg`, in table order."""


def image_sparsification(
    pred: np.ndarray,
    gt: np.ndarray,
    uncertainty: np.ndarray,
    *,
    min_depth: float,
    max_depth: float,
    crop: np.ndarray,
) -> dict[str, dict] | None:
    """Curves of one (H, W) prediction and uncertainty map, on the pixels ``depth_metrics`` scores.

    The prediction is treated as for the depth metrics (NaN -> min_depth, then clamped to
    [min_depth, max_depth]); a NaN uncertainty counts as the highest (removed first). None when no
    pixel is valid.
    """
    pred = np.asarray(pred, dtype=np.float64)
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if not pred.shape == gt.shape == uncertainty.shape:
        raise ValueError(f"pred, gt and uncertainty must share one (H, W) shape: {pred.shape}, {uncertainty.shape}")
    valid = valid_mask(gt, min_depth=min_depth, max_depth=max_depth, crop=crop)
    if not valid.any():
        return None
    pred = np.clip(np.nan_to_num(pred[valid], nan=min_depth), min_depth, max_depth)
    return sparsification_curves(pred, gt[valid], np.nan_to_num(uncertainty[valid], nan=np.inf))


def mean_curves(per_image: list[dict[str, dict]]) -> dict[str, dict[str, list[float]]]:
    """Mean over images of each curve, as lists (JSON): ``{metric: {curve: [100 floats]}}``."""
    return {
        name: {kind: np.mean([c[name][kind] for c in per_image], axis=0).tolist() for kind in CURVES}
        for name in SPARSIFICATION_METRICS
    }
