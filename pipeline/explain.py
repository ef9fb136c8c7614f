"""What a DPM student believes, per image and per pixel: the numbers behind ``tiekd explain``.

For one image: the student's depth and DPM entropy (from one forward pass, no flip TTA: a
distribution belongs to one pass), its absolute error where GT exists, and the per-pixel
KL(teacher DPM || student DPM) at the student's working resolution, the teacher DPM built from
the cached teacher depth with :mod:`tiekd.pipeline.dpm` exactly as training builds it (same sigma,
form and nearest-neighbour resizing). For a few pixels: the student's distribution over the depth
bins beside the teacher's DPM, GT and both expected depths.

Pixels are picked automatically (:func:`pick_pixels`) or given. Full-resolution maps and pixel
coordinates are on the 352x1216 KB crop; the student's probabilities at a pixel are the bilinear
interpolation (align_corners=False, as the depth map is upsampled) of its low-resolution
probabilities, so the expected depth of the plotted distribution is the depth map's value there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tiekd.pipeline.dpm import dpm_entropy, expected_depth, teacher_dpm
from tiekd.pipeline.losses import dpm_distillation_maps
from tiekd.pipeline.metrics import DELTA_BASE


@dataclass
class PixelExplanation:
    """One pixel: the student's distribution over the K bins against the teacher's DPM."""

    name: str
    row: int
    col: int
    student: np.ndarray
    """(K,) student probabilities."""
    teacher: np.ndarray | None
    """(K,) teacher DPM (None without a teacher cache)."""
    student_depth: float
    teacher_depth: float | None
    gt: float | None
    """GT depth in metres, None where the pixel has no measurement."""
    entropy: float


@dataclass
class ImageExplanation:
    """One image: full-resolution maps (H, W) on the KB crop, the KL map at the student's resolution."""

    id: str
    image: np.ndarray
    """uint8 (H, W, 3)."""
    gt: np.ndarray
    """metres, 0 = no measurement."""
    student_depth: np.ndarray
    entropy: np.ndarray
    """nats."""
    teacher_depth: np.ndarray | None
    kl: np.ndarray | None
    """(h, w) KL(teacher DPM || student DPM) in nats at the student's resolution."""
    n_bins: int
    pixels: list[PixelExplanation] = field(default_factory=list)

    @property
    def error(self) -> np.ndarray:
        """|student depth - GT| in metres, NaN where no GT."""
        return np.where(self.gt > 0, np.abs(self.student_depth - self.gt), np.nan)


def probabilities_at(probabilities: torch.Tensor, points: list[tuple[int, int]], size: tuple[int, int]) -> np.ndarray:
    """(1, K, h, w) probabilities, bilinearly read at full-resolution pixels (row, col) of a map of
    ``size`` (H, W) -> (P, K), as ``F.interpolate(..., size, align_corners=False)`` would give them."""
    height, width = size
    grid = torch.tensor(
        [[(2 * (col + 0.5) / width - 1, 2 * (row + 0.5) / height - 1) for row, col in points]],
        dtype=probabilities.dtype,
    )[:, None]
    values = F.grid_sample(
        probabilities, grid.to(probabilities.device), mode="bilinear", padding_mode="border", align_corners=False
    )
    return values[0, :, 0].T.double().cpu().numpy()


def depth_edges(depth: np.ndarray) -> np.ndarray:
    """Magnitude of the gradient of log depth (central differences), (H, W): large at depth edges."""
    rows, cols = np.gradient(np.log(np.clip(depth, 1e-3, None)))
    return np.hypot(rows, cols)


def _argmax(values: np.ndarray, where: np.ndarray) -> tuple[int, int] | None:
    if not where.any():
        return None
    row, col = np.unravel_index(np.argmax(np.where(where, values, -np.inf)), values.shape)
    return int(row), int(col)


def pick_pixels(
    *, entropy: np.ndarray, error: np.ndarray, gt: np.ndarray, edge_depth: np.ndarray, region: np.ndarray
) -> dict[str, tuple[int, int]]:
    """The automatic pixels, inside ``region`` (bool (H, W), e.g. the evaluation crop):

    highest entropy; highest absolute error (GT pixels); the strongest depth edge of ``edge_depth``
    (teacher depth where cached); the lowest entropy among GT pixels that are correct by d1
    (max(d/g, g/d) < 1.25). A kind with no candidate pixel is left out.
    """
    has_gt = region & (gt > 0)
    correct = has_gt & (np.abs(np.nan_to_num(error)) < (DELTA_BASE - 1) * np.where(gt > 0, gt, 1))
    picks = {
        "highest entropy": _argmax(entropy, region),
        "highest error": _argmax(np.nan_to_num(error, nan=-np.inf), has_gt),
        "depth edge": _argmax(depth_edges(edge_depth), region),
        "confident and correct": _argmax(-entropy, correct),
    }
    return {name: point for name, point in picks.items() if point is not None}


def kl_map(logits: torch.Tensor, teacher_depth: torch.Tensor, edges: torch.Tensor, *, sigma: float, form: str):
    """Per-pixel KL(teacher DPM || student DPM) in nats, (h, w), as the TIE-KD loss computes it."""
    with torch.no_grad():
        kl, _ = dpm_distillation_maps(logits, teacher_depth, edges, sigma=sigma, form=form)
    return kl[0, 0].cpu().numpy()


def student_maps(logits: torch.Tensor, centres: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """(1, K, h, w) logits -> depth (H, W) metres and entropy (H, W) nats, upsampled bilinearly to ``size``."""
    maps = torch.cat([expected_depth(logits, centres), dpm_entropy(logits)], dim=1)
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[0]
    return maps[0].cpu().numpy(), maps[1].cpu().numpy()


def explain_pixels(
    explanation: ImageExplanation,
    logits: torch.Tensor,
    points: dict[str, tuple[int, int]],
    *,
    centres: torch.Tensor,
    edges: torch.Tensor,
    sigma: float,
    form: str,
) -> list[PixelExplanation]:
    """The student's distribution, the teacher's DPM, GT and both depths at each named pixel."""
    if not points:
        return []
    size = explanation.gt.shape
    student = probabilities_at(torch.softmax(logits.double(), dim=1), list(points.values()), size)
    pixels = []
    for (name, (row, col)), probabilities in zip(points.items(), student):
        teacher = None
        if explanation.teacher_depth is not None:
            depth = torch.tensor(float(explanation.teacher_depth[row, col]), dtype=torch.float64).view(1, 1, 1, 1)
            teacher = teacher_dpm(depth, edges.double(), sigma, form)[0, :, 0, 0].numpy()
        pixels.append(
            PixelExplanation(
                name=name,
                row=row,
                col=col,
                student=probabilities,
                teacher=teacher,
                student_depth=float(probabilities @ centres.double().cpu().numpy()),
                teacher_depth=None if teacher is None else float(explanation.teacher_depth[row, col]),
                gt=float(explanation.gt[row, col]) if explanation.gt[row, col] > 0 else None,
                entropy=float(-(probabilities * np.log(np.clip(probabilities, 1e-300, None))).sum()),
            )
        )
    return pixels
