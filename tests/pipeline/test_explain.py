"""The numbers behind ``tiekd explain``: pixel reads, automatic pixels, KL map, per-pixel distributions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiekd.pipeline.dpm import bin_centres, bin_edges, expected_depth, teacher_dpm
from tiekd.pipeline.explain import (
    ImageExplanation,
    explain_pixels,
    kl_map,
    pick_pixels,
    probabilities_at,
    student_maps,
)

EDGES = bin_edges(1e-3, 80.0, 32)
CENTRES = bin_centres(EDGES)
SIZE = (24, 40)
"""Full-resolution map size; the student works at half of it."""


def logits(seed=0):
    return torch.randn(1, 32, 12, 20, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_probabilities_at_equal_the_upsampled_map():
    probabilities = torch.softmax(logits(), dim=1)
    points = [(0, 0), (5, 17), (23, 39), (11, 2)]
    upsampled = F.interpolate(probabilities, size=SIZE, mode="bilinear", align_corners=False)[0]
    got = probabilities_at(probabilities, points, SIZE)
    np.testing.assert_allclose(got, np.stack([upsampled[:, r, c].numpy() for r, c in points]), atol=1e-12)


def test_pick_pixels_closed_form():
    entropy = np.zeros(SIZE)
    entropy[3, 4], entropy[20, 30] = 5.0, 9.0  # (20, 30) is outside the region
    region = np.zeros(SIZE, bool)
    region[:, :25] = True
    gt = np.zeros(SIZE)
    gt[10, 10], gt[12, 12], gt[14, 14] = 10.0, 20.0, 30.0
    depth = np.full(SIZE, 10.0)
    depth[:, 15:] = 40.0  # an edge between columns 14 and 15
    error = np.where(gt > 0, np.abs(depth - gt), np.nan)  # 0, 10, 20 m
    entropy[10, 10] = 0.5  # (10, 10) is the only GT pixel correct by d1
    picks = pick_pixels(entropy=entropy, error=error, gt=gt, edge_depth=depth, region=region)
    assert picks["highest entropy"] == (3, 4)
    assert picks["highest error"] == (14, 14)
    assert picks["depth edge"][1] in (14, 15)
    assert picks["confident and correct"] == (10, 10)
    none = pick_pixels(entropy=entropy, error=error, gt=np.zeros(SIZE), edge_depth=depth, region=region)
    assert set(none) == {"highest entropy", "depth edge"}


def test_kl_map_equals_a_naive_float64_kl():
    student = logits(1).float()
    teacher_depth = torch.rand(1, 1, 12, 20, generator=torch.Generator().manual_seed(2)) * 70 + 5
    got = kl_map(student, teacher_depth, EDGES, sigma=0.8, form="paper")
    p_t = teacher_dpm(teacher_depth.double(), EDGES.double(), 0.8, "paper")[0].numpy()
    p_s = torch.softmax(student.double(), dim=1)[0].numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        naive = np.where(p_t > 0, p_t * (np.log(p_t) - np.log(p_s + 1e-7)), 0.0).sum(axis=0)
    np.testing.assert_allclose(got, naive, rtol=1e-4, atol=1e-5)


def test_pixels_carry_both_distributions_and_depths():
    student = logits(3)
    depth, entropy = student_maps(student.float(), CENTRES, SIZE)
    gt = np.zeros(SIZE, np.float32)
    gt[7, 9] = 33.0
    teacher = np.full(SIZE, 21.0, np.float32)
    explanation = ImageExplanation(
        id="x", image=np.zeros((*SIZE, 3), np.uint8), gt=gt, student_depth=depth, entropy=entropy,
        teacher_depth=teacher, kl=None, n_bins=32,
    )  # fmt: skip
    points = {"a": (7, 9), "b": (0, 39)}
    [a, b] = explain_pixels(explanation, student, points, centres=CENTRES, edges=EDGES, sigma=0.8, form="paper")
    assert (a.name, a.row, a.col, a.gt, b.gt) == ("a", 7, 9, 33.0, None)
    assert a.student.sum() == pytest.approx(1.0) and a.teacher.sum() == pytest.approx(1.0)
    assert CENTRES[np.argmax(a.teacher)].item() == pytest.approx(21.0, abs=80 / 32 / 2)
    assert a.student_depth == pytest.approx(depth[7, 9], rel=1e-5)
    assert b.student_depth == pytest.approx(depth[0, 39], rel=1e-5)
    assert a.teacher_depth == 21.0
    assert a.entropy == pytest.approx(-(a.student * np.log(a.student)).sum())
    low_res = expected_depth(student.float(), CENTRES)
    assert depth.shape == SIZE and np.isclose(depth.mean(), low_res.mean().item(), rtol=0.05)
