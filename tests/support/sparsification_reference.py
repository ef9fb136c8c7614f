"""Independent NumPy transcription of mono-uncertainty's AUSE/AURG (Poggi et al., CVPR 2020): the
test reference of tiekd.pipeline.sparsification, one metric call per point, no shared code.

Adapted from the issue-17 study (research17/compute_aucs_reference.py, checked against the extracted
original on 60 metric cases, tied and constant uncertainty included: max |diff| 8.9e-16).

Source read: mattpoggi/mono-uncertainty @ 543772b, ``evaluate.py``
  l.46     uncertainty_metrics = ["abs_rel", "rmse", "a1"]
  l.68-97  compute_eigen_errors_v2(gt, pred, metrics, mask=None, reduce_mean=False)
  l.99-150 compute_aucs(gt, pred, uncert, intervals=50)
  l.204-239 how it is called: per image, on the valid pixels only (Garg/Eigen crop and
           1e-3 < gt < max_depth for the eigen split, gt > 0 otherwise), after the prediction is
           scaled and clamped to [1e-3, max_depth]; l.241-253: the per-image [AUSE, AURG] are
           averaged over images (np.array(aucs[m]).mean(0)).

The algorithm (written from reading it):
  * per-pixel "errors":  abs_rel: |gt - pred| / gt;  rmse: (gt - pred)^2;
    a1: max(gt/pred, pred/gt)  (the ratio itself, a continuous value, not the indicator).
  * reduced metric on a subset S: abs_rel = mean over S; rmse = sqrt(mean over S of (gt-pred)^2);
    a1 = fraction of S with ratio >= 1.25 (i.e. 1 - delta1, "outliers").
  * u = -uncert (so that removing the highest uncertainty = keeping u >= threshold).
    quants = [100/intervals * t for t in 0..intervals-1]  ->  0, 2, 4, ..., 98 for 50 intervals.
    thresholds = np.percentile(u, q) (NumPy default linear interpolation);
    subset t = {u >= thresholds[t]}  -- ties at the threshold are all KEPT, so with tied
    uncertainties the subset can be larger than (100 - q) % of the pixels.
  * sparsification curve = [metric(subset t) for t in 0..intervals-1] + [0]  (51 values; the
    appended 0 is the terminal point at x = 1, "all pixels removed").
  * oracle: the same with u replaced by -error of that metric (per-pixel error as above), its
    own percentiles, same >= rule, plus the terminal 0.
  * x = [t / intervals for t in 0..intervals]  (0, 0.02, ..., 1.0).
  * AUSE_m = trapz(sparsification, x) - trapz(oracle, x)
  * AURG_m = metric(all pixels) - trapz(sparsification, x)
    (the random curve is the constant metric(all) at all 51 points, l.138; its area over [0, 1]
    is that constant; the code uses rnd_curve[m][0] directly, l.147).
  * No normalisation of the curves by their first value.
Returns {metric: [AUSE, AURG]} for metric in ("abs_rel", "rmse", "a1").

np.trapz is written out here (it is deprecated in NumPy 2 and removed in later versions).
"""

from __future__ import annotations

import numpy as np

UNCERTAINTY_METRICS = ("abs_rel", "rmse", "a1")


def pixel_errors(gt: np.ndarray, pred: np.ndarray, metric: str) -> np.ndarray:
    """Per-pixel error used to rank pixels for the oracle (evaluate.py l.77-95, reduce_mean=False)."""
    if metric == "abs_rel":
        return np.abs(gt - pred) / gt
    if metric == "rmse":
        return (gt - pred) ** 2
    if metric == "a1":
        return np.maximum(gt / pred, pred / gt)
    raise ValueError(metric)


def reduced_metric(gt: np.ndarray, pred: np.ndarray, metric: str, mask=None) -> float:
    """The metric over the masked pixels (evaluate.py l.73-95 with reduce_mean=True)."""
    if mask is not None:
        gt, pred = gt[mask], pred[mask]
    if metric == "abs_rel":
        return float(np.mean(np.abs(gt - pred) / gt))
    if metric == "rmse":
        return float(np.sqrt(np.mean((gt - pred) ** 2)))
    if metric == "a1":
        return float(np.mean(np.maximum(gt / pred, pred / gt) >= 1.25))
    raise ValueError(metric)


def _trapezoid(y, x) -> float:
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def sparsification_curve(gt, pred, ranking, metric, intervals=50) -> list:
    """Metric after removing the pixels with the lowest ``ranking`` values first, at
    0, 1/intervals, ..., (intervals-1)/intervals removed; then the terminal 0 at x = 1.
    ``ranking`` = -uncertainty for the method, -error for the oracle."""
    quants = [100.0 / intervals * t for t in range(intervals)]
    thresholds = [np.percentile(ranking, q) for q in quants]
    return [reduced_metric(gt, pred, metric, mask=(ranking >= t)) for t in thresholds] + [0.0]


def compute_aucs(gt, pred, uncert, intervals: int = 50) -> dict:
    """AUSE and AURG of one image's valid pixels (1-D arrays of equal length).

    gt, pred: depths (pred already clamped as the caller does); uncert: higher = less certain.
    Returns {"abs_rel": [AUSE, AURG], "rmse": [AUSE, AURG], "a1": [AUSE, AURG]}.
    """
    gt = np.asarray(gt, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    u = -np.asarray(uncert, dtype=np.float64).ravel()
    x = [t / intervals for t in range(intervals + 1)]
    out = {}
    for m in UNCERTAINTY_METRICS:
        sparse = sparsification_curve(gt, pred, u, m, intervals)
        oracle = sparsification_curve(gt, pred, -pixel_errors(gt, pred, m), m, intervals)
        area = _trapezoid(sparse, x)
        out[m] = [area - _trapezoid(oracle, x), reduced_metric(gt, pred, m) - area]
    return out


def mean_over_images(per_image: list) -> dict:
    """evaluate.py l.249-250: per metric, the mean over images of [AUSE, AURG]."""
    return {m: list(np.mean(np.array([d[m] for d in per_image]), axis=0)) for m in UNCERTAINTY_METRICS}


TIEKD_NAMES = {"rmse": "rmse", "abs_rel": "abs_rel", "d1": "a1"}
"""tiekd's metric names -> mono-uncertainty's (``d1`` is 1 - d1, Poggi's ``a1``)."""


def reference_scores(pred, gt, uncertainty) -> dict:
    """compute_aucs of one image under tiekd's keys: {"ause_rmse", ..., "aurg_d1"}."""
    aucs = compute_aucs(gt, pred, uncertainty)
    return {f"{kind}_{ours}": aucs[theirs][i] for i, kind in enumerate(("ause", "aurg")) for ours, theirs in TIEKD_NAMES.items()}


def reference_curves(pred, gt, uncertainty, name) -> tuple[list, list]:
    """(model, oracle) sparsification curves of tiekd metric ``name``, 51 points each."""
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    metric = TIEKD_NAMES[name]
    model = sparsification_curve(gt, pred, -np.asarray(uncertainty, np.float64), metric)
    return model, sparsification_curve(gt, pred, -pixel_errors(gt, pred, metric), metric)
