"""The mixture of teachers' DPMs (pipeline/mixture.py) against float64 NumPy and one-teacher TIE-KD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from tiekd.pipeline.dpm import bin_edges
from tiekd.pipeline.losses import tiekd_loss_terms
from tiekd.pipeline.mixture import mixture_loss_terms, mixture_target

EDGES = bin_edges(1e-3, 80.0, 32).double()


def paper_dpm(depth: float, edges: np.ndarray, sigma: float) -> np.ndarray:
    """TIE-KD's paper DPM of one depth, independently: Gaussian mass per bin, renormalised."""
    mass = np.diff(norm.cdf((edges - depth) / sigma))
    return mass / mass.sum()


def test_the_mixture_is_the_weighted_sum_of_the_teachers_dpms():
    rng = np.random.default_rng(0)
    depths = rng.uniform(2, 70, (2, 2, 3, 4))
    weights = np.array([0.3, 0.7])
    target = mixture_target(torch.from_numpy(depths), torch.tensor(weights), EDGES, sigma=0.8).numpy()
    edges = EDGES.numpy()
    for b, i, j in np.ndindex(2, 3, 4):
        expected = sum(w * paper_dpm(depths[b, t, i, j], edges, 0.8) for t, w in enumerate(weights))
        np.testing.assert_allclose(target[b, :, i, j], expected, atol=1e-9)
    np.testing.assert_allclose(target.sum(1), 1.0, atol=1e-12)


def test_the_dpm_term_is_the_kl_of_the_mixture_against_the_student():
    rng = np.random.default_rng(1)
    depths = rng.uniform(2, 70, (1, 3, 2, 2))
    weights = np.array([1.0, 2.0, 1.0])
    logits = rng.normal(size=(1, 32, 2, 2))
    terms = mixture_loss_terms(torch.from_numpy(logits), torch.from_numpy(depths), torch.tensor(weights), EDGES,
                               alpha=0.5, sigma=0.8)  # fmt: skip
    edges, kl = EDGES.numpy(), []
    for i, j in np.ndindex(2, 2):
        p = sum(w / 4 * paper_dpm(depths[0, t, i, j], edges, 0.8) for t, w in enumerate(weights))
        q = np.exp(logits[0, :, i, j] - logits[0, :, i, j].max())
        q /= q.sum()
        kl.append(np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0)))
    assert float(terms["dpm"]) == pytest.approx(np.mean(kl), rel=1e-9)
    same = mixture_loss_terms(
        torch.from_numpy(logits),
        torch.from_numpy((depths * weights[:, None, None]).sum(1, keepdims=True) / 4).expand(1, 3, 2, 2),
        torch.tensor(weights),
        EDGES,
        alpha=0.5,
        sigma=0.8,
    )
    assert float(terms["depth"]) == pytest.approx(float(same["depth"]), rel=1e-12)  # the weighted mean depth


def test_one_teacher_of_weight_one_is_tiekd():
    torch.manual_seed(0)
    logits = torch.randn(2, 32, 8, 8, dtype=torch.float64)
    depth = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 60 + 5
    ours = mixture_loss_terms(logits, depth, torch.ones(1), EDGES, alpha=0.1, sigma=0.8)
    theirs = tiekd_loss_terms(logits, depth, EDGES, alpha=0.1, sigma=0.8)
    # tiekd_loss_terms sums the KL in float32 chunks: equal to float32 precision
    assert float(ours["dpm"]) == pytest.approx(float(theirs["dpm"]), rel=1e-5)
    assert float(ours["total"]) == pytest.approx(float(theirs["total"]), rel=1e-5)
