"""An independent float64 NumPy reference for sparsification curves, AUSE and AURG: one metric
call per removed fraction, numpy's own trapezoid rule."""

import numpy as np

METRICS = ("rmse", "abs_rel", "d1")


def reference_metric(name, pred, gt):
    if name == "rmse":
        return np.sqrt(np.mean((pred - gt) ** 2))
    if name == "abs_rel":
        return np.mean(np.abs(pred - gt) / gt)
    return 1.0 - np.mean(np.maximum(pred / gt, gt / pred) < 1.25)


def reference_error(name, pred, gt):
    """The per-pixel error the oracle removes first, largest first."""
    if name == "rmse":
        return np.abs(pred - gt)
    if name == "abs_rel":
        return np.abs(pred - gt) / gt
    return np.maximum(pred / gt, gt / pred)


def reference_curve(name, pred, gt, key):
    """Remove the floor(k N / 100) pixels with the largest key, k = 0..99, one metric call each.

    Equal keys keep pixel order (as tiekd documents): an untrained student's entropy has many ties.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    order = np.argsort(-np.asarray(key, np.float64), kind="stable")
    n = len(pred)
    kept = [order[k * n // 100 :] for k in range(100)]
    return np.array([reference_metric(name, pred[rest], gt[rest]) for rest in kept])


def reference_scores(pred, gt, uncertainty):
    x = np.arange(100) / 100
    scores = {}
    for name in METRICS:
        model = np.trapezoid(reference_curve(name, pred, gt, uncertainty), x)
        oracle = np.trapezoid(reference_curve(name, pred, gt, reference_error(name, pred, gt)), x)
        scores[f"ause_{name}"] = model - oracle
        scores[f"aurg_{name}"] = 0.99 * reference_metric(name, pred, gt) - model
    return scores
