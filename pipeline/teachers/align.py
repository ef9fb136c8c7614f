"""Aligning a relative teacher's output to metric depth, frame by frame.

Teachers that are not metric (Depth Anything's relative models, MiDaS) predict depth or inverse
depth (disparity) up to an unknown scale and shift per image. Each frame is aligned against a
metric reference of the same frame: its sparse GT, or a metric teacher's map of it.

The fit is least squares of ``scale * prediction + shift`` against the reference, in inverse
depth for ``relative-inverse`` outputs (where the affine ambiguity lies, MiDaS: Ranftl et al.
2020, eq. 4) and in depth for ``relative-depth`` outputs. It is robust:

- only pixels whose reference lies inside (min_depth, max_depth) count (no GT = 0, and a metric
  teacher's sky clipped at max_depth, are left out);
- trimmed: ``TRIM_ROUNDS`` times, the fit is redone on the pixels whose residual under the previous
  fit is within ``OUTLIER_MADS`` robust standard deviations (1.4826 x the median absolute
  residual) and outside the ``TRIM_SHARE`` largest (outliers: moving objects, GT bleeding over
  edges, a wrong measurement).

The aligned map is ``1 / (scale * prediction + shift)`` (inverse; infinitely far where that is not
positive, as the sky) or ``scale * prediction + shift``; stage one then clips it into
[min_depth, max_depth] as any teacher's map. Fits are computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiekd.pipeline.errors import TeacherError

TEACHER_OUTPUTS = ("metric", "relative-depth", "relative-inverse")
"""What a teacher predicts: metric depth in metres, or depth / inverse depth up to scale and shift."""
TRIM_SHARE = 0.1
"""Share of the pixels with the largest residuals left out in each trimming round."""
TRIM_ROUNDS = 5
OUTLIER_MADS = 3.0
"""Residuals beyond this many robust standard deviations are outliers (a Gaussian keeps 99.7 %)."""
MIN_PIXELS = 20
"""Fewest reference pixels a frame's fit may rest on: two unknowns, and room for trimming."""


@dataclass(frozen=True)
class Alignment:
    """The fit of one frame: aligned value = scale * prediction + shift (in the fitted space)."""

    scale: float
    shift: float
    pixels: int
    """Reference pixels the final fit used (after trimming)."""


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    design = np.stack([x, np.ones_like(x)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(scale), float(shift)


def fit_alignment(
    prediction: np.ndarray, reference: np.ndarray, *, kind: str, min_depth: float, max_depth: float, what: str
) -> Alignment:
    """The robust fit of ``prediction`` (H, W) to ``reference`` (H, W) metres (0 = none); ``what``
    names the frame in the TeacherError raised when too few reference pixels remain."""
    valid = (reference > min_depth) & (reference < max_depth) & np.isfinite(prediction)
    if int(valid.sum()) < MIN_PIXELS:
        raise TeacherError(
            f"{what} has {int(valid.sum())} reference pixels inside the depth range, fewer than the {MIN_PIXELS} "
            "an alignment needs; give it GT or a metric teacher's map, or leave it out"
        )
    x = prediction[valid].astype(np.float64)
    y = reference[valid].astype(np.float64)
    y = 1.0 / y if kind == "relative-inverse" else y
    keep = np.ones(x.size, bool)
    floor = 1e-12 * float(np.abs(y).max())  # exact data: rounding residuals are not outliers
    for _ in range(TRIM_ROUNDS):
        scale, shift = _least_squares(x[keep], y[keep])
        residual = np.abs(scale * x + shift - y)
        spread = OUTLIER_MADS * 1.4826 * float(np.median(residual[keep]))
        keep = residual <= max(min(np.quantile(residual, 1 - TRIM_SHARE), spread), floor)
    scale, shift = _least_squares(x[keep], y[keep])
    return Alignment(scale=scale, shift=shift, pixels=int(keep.sum()))


def aligned_depth(prediction: np.ndarray, fit: Alignment, *, kind: str) -> np.ndarray:
    """Metric depth (H, W) float64 metres of a relative ``prediction`` under its fit (not clipped;
    inf where an inverse depth is not positive)."""
    value = fit.scale * prediction.astype(np.float64) + fit.shift
    if kind == "relative-inverse":
        with np.errstate(divide="ignore"):
            value = np.where(value > 0, 1.0 / np.maximum(value, 1e-300), np.inf)
    return value
