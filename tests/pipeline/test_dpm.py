"""Tests of tiekd.pipeline.dpm: bins, both teacher DPM forms, expected depth and entropy.

Closed forms are recomputed independently in float64 with math / NumPy.
"""

import math

import numpy as np
import pytest
import torch

from tiekd.pipeline.dpm import (
    DPM_FORMS,
    RELEASED_CODE_SIGMA,
    bin_centres,
    bin_edges,
    dpm_entropy,
    dpm_sigma,
    dpm_window_size,
    expected_depth,
    teacher_dpm,
    teacher_dpm_window,
)

MIN_DEPTH, MAX_DEPTH, N_BINS = 1e-3, 80.0, 257  # KITTI, method.md section 2
BIN_WIDTH = (MAX_DEPTH - MIN_DEPTH) / N_BINS
SIGMA = 0.8  # KITTI paper-form sigma, method.md section 3
FORMS = ("paper", "code")
# Depths for the closed-form checks; the range start as float32 rounds it (teacher_dpm clamps to e_0).
CLOSED_FORM_DEPTHS = [float(np.float32(MIN_DEPTH)), 0.3, 3.7, 41.234, 79.95, MAX_DEPTH]


@pytest.fixture(scope="module")
def edges():
    return bin_edges(MIN_DEPTH, MAX_DEPTH, N_BINS)


def depth_map(values, dtype=torch.float32):
    """(1, 1, 1, N) depth map from a list of metres."""
    return torch.tensor(values, dtype=dtype).view(1, 1, 1, -1)


def pixel_distributions(dpm):
    """(B, K, H, W) -> (pixels, K) float64 NumPy array."""
    return dpm.permute(0, 2, 3, 1).reshape(-1, dpm.shape[1]).double().numpy()


def paper_closed_form(depth, edges, sigma):
    """Bin masses of N(depth, sigma), renormalised over the bins, with math.erf in float64."""
    cdf = np.array([0.5 * math.erfc((depth - e) / (sigma * math.sqrt(2))) for e in edges])
    mass = np.diff(cdf)
    return mass / mass.sum()


def code_closed_form(depth, centres, sigma):
    """Released code: softmax of the Gaussian density at the centres, densities < 1e-16 set to -1000."""
    peak = 1 / math.sqrt(2 * math.pi * sigma**2)
    density = np.array([peak * math.exp(-((c - depth) ** 2) / (2 * sigma**2)) for c in centres])
    values = np.where(density < 1e-16, -1000.0, density)
    weights = np.exp(values - values.max())
    return weights / weights.sum()


def moments(dpm, centres):
    """Mean and standard deviation (metres) of each pixel's distribution over the bin centres."""
    p, c = pixel_distributions(dpm), centres.double().numpy()
    mean = p @ c
    return mean, np.sqrt((p * (c - mean[:, None]) ** 2).sum(axis=1))


class TestBins:
    def test_edges_and_centres(self, edges):
        assert edges.shape == (N_BINS + 1,)
        assert edges[0].item() == pytest.approx(MIN_DEPTH, abs=1e-9)
        assert edges[-1].item() == MAX_DEPTH
        np.testing.assert_allclose(np.diff(edges.double().numpy()), 0.31128, atol=2e-5)
        centres = bin_centres(edges)
        assert centres.shape == (N_BINS,)
        np.testing.assert_allclose(centres.numpy(), (edges[:-1].numpy() + edges[1:].numpy()) / 2)

    @pytest.mark.parametrize("args", [(1.0, 1.0, 10), (2.0, 1.0, 10), (0.0, 1.0, 0)])
    def test_bad_bins_raise(self, args):
        with pytest.raises(ValueError):
            bin_edges(*args)


class TestTeacherDpm:
    @pytest.mark.parametrize("form", FORMS)
    def test_sums_to_one_and_is_a_distribution(self, edges, form):
        depth = depth_map([0.0, MIN_DEPTH, 0.2, 5.0, 40.0, 79.9, MAX_DEPTH, 200.0])
        dpm = teacher_dpm(depth, edges, SIGMA, form)
        assert dpm.shape == (1, N_BINS, 1, 8)
        assert dpm.dtype == torch.float32
        assert torch.isfinite(dpm).all() and (dpm >= 0).all()
        torch.testing.assert_close(dpm.sum(dim=1), torch.ones(1, 1, 8), atol=2e-6, rtol=0)

    @pytest.mark.parametrize("form", FORMS)
    def test_mode_is_the_teacher_bin(self, edges, form):
        depth = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(0)) * MAX_DEPTH
        dpm = teacher_dpm(depth, edges, SIGMA, form)
        depth_bin = torch.searchsorted(edges, depth.flatten(), right=True) - 1
        assert torch.equal(dpm.argmax(dim=1).flatten(), depth_bin)

    @pytest.mark.parametrize(
        "form, sigma, margin", [("paper", SIGMA, 4 * SIGMA), ("code", SIGMA, 8.0), ("code", RELEASED_CODE_SIGMA, 5.0)]
    )
    def test_mean_within_one_bin_away_from_range_ends(self, edges, form, sigma, margin):
        depth = torch.linspace(MIN_DEPTH + margin, MAX_DEPTH - margin, 301).view(1, 1, 1, -1)
        mean, _ = moments(teacher_dpm(depth, edges, sigma, form), bin_centres(edges))
        assert np.abs(mean - depth.flatten().numpy()).max() < BIN_WIDTH

    def test_code_form_mean_is_biased_near_range_ends(self, edges):
        """The released form's defect (method.md section 3): its mean is pulled inwards near d_min, d_max."""
        depth = depth_map([1.0, 3.0, MAX_DEPTH - 1.0])
        mean, _ = moments(teacher_dpm(depth, edges, RELEASED_CODE_SIGMA, "code"), bin_centres(edges))
        bias = mean - depth.flatten().numpy()
        assert bias[0] > 1.0 and bias[1] > BIN_WIDTH and bias[2] < -1.0

    @pytest.mark.parametrize("depth", CLOSED_FORM_DEPTHS)
    @pytest.mark.parametrize("sigma", [0.15, SIGMA, 2.0])
    def test_paper_form_matches_closed_form(self, edges, depth, sigma):
        expected = paper_closed_form(depth, edges.double().numpy(), sigma)
        dpm64 = teacher_dpm(depth_map([depth], torch.float64), edges, sigma, "paper")
        np.testing.assert_allclose(pixel_distributions(dpm64)[0], expected, rtol=1e-9, atol=1e-15)
        dpm32 = teacher_dpm(depth_map([depth]), edges, sigma, "paper")
        np.testing.assert_allclose(pixel_distributions(dpm32)[0], expected, rtol=1e-4, atol=1e-7)

    @pytest.mark.parametrize("depth", CLOSED_FORM_DEPTHS)
    @pytest.mark.parametrize("sigma", [0.15, RELEASED_CODE_SIGMA, SIGMA, 2.0])
    def test_code_form_matches_closed_form(self, edges, depth, sigma):
        expected = code_closed_form(depth, bin_centres(edges.double()).numpy(), sigma)
        dpm64 = teacher_dpm(depth_map([depth], torch.float64), edges, sigma, "code")
        np.testing.assert_allclose(pixel_distributions(dpm64)[0], expected, rtol=1e-9, atol=1e-15)
        dpm32 = teacher_dpm(depth_map([depth]), edges, sigma, "code")
        np.testing.assert_allclose(pixel_distributions(dpm32)[0], expected, rtol=1e-4, atol=1e-7)

    def test_code_form_with_sigma_below_bin_width_is_uniform_like_the_released_code(self, edges):
        """Every density under 1e-16 -> every value -1000 -> a flat softmax over all K bins."""
        depth = depth_map([edges[100].item()], torch.float64)
        dpm = teacher_dpm(depth, edges, 0.01, "code")
        np.testing.assert_allclose(pixel_distributions(dpm)[0], np.full(N_BINS, 1 / N_BINS), rtol=1e-12)

    def test_sigma_is_honoured(self, edges):
        """Paper form: std = sqrt(sigma^2 + w^2 / 12) (Sheppard), about 0.81 m at sigma 0.8."""
        depth = torch.linspace(10.0, 70.0, 41).view(1, 1, 1, -1)
        for sigma in (0.4, SIGMA, 1.6):
            _, std = moments(teacher_dpm(depth, edges, sigma, "paper"), bin_centres(edges))
            np.testing.assert_allclose(std, math.sqrt(sigma**2 + BIN_WIDTH**2 / 12), rtol=3e-3)
        _, std_05 = moments(teacher_dpm(depth, edges, 0.5, "code"), bin_centres(edges))
        _, std_08 = moments(teacher_dpm(depth, edges, SIGMA, "code"), bin_centres(edges))
        assert std_08.mean() / std_05.mean() == pytest.approx(SIGMA / 0.5, rel=0.05)

    def test_about_sixteen_bins_above_one_per_mille(self, edges):
        depth = torch.linspace(10.0, 70.0, 97).view(1, 1, 1, -1)
        counts = (teacher_dpm(depth, edges, SIGMA, "paper") > 1e-3).sum(dim=1)
        assert counts.min() >= 15 and counts.max() <= 17

    def test_released_code_sigma_spreads_over_about_27_bins(self, edges):
        counts = (teacher_dpm(depth_map([20.0, 40.1, 60.3]), edges, RELEASED_CODE_SIGMA, "code") > 1e-3).sum(dim=1)
        assert counts.min() >= 26 and counts.max() <= 28

    @pytest.mark.parametrize(
        "form, sigma",
        [("paper", SIGMA), ("paper", 0.01), ("code", RELEASED_CODE_SIGMA), ("code", 30.0), ("paper", 30.0)],
    )
    def test_window_agrees_with_dense(self, edges, form, sigma):
        depth = torch.rand(1, 1, 3, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 90
        first_bin, window = teacher_dpm_window(depth, edges, sigma, form)
        assert window.shape[1] == dpm_window_size(edges, sigma, form) <= N_BINS
        dense = teacher_dpm(depth, edges, sigma, form)
        bins = first_bin + torch.arange(window.shape[1]).view(1, -1, 1, 1)
        torch.testing.assert_close(dense.gather(1, bins), window)
        torch.testing.assert_close(window.sum(dim=1, keepdim=True), torch.ones_like(depth))

    def test_no_gradient(self, edges):
        depth = depth_map([5.0, 6.0]).requires_grad_()
        assert not teacher_dpm(depth, edges, SIGMA).requires_grad

    @pytest.mark.parametrize("form, sigma", [("gaussian", SIGMA), ("paper", 0.0), ("code", -1.0)])
    def test_bad_options_raise(self, edges, form, sigma):
        with pytest.raises(ValueError):
            teacher_dpm(depth_map([5.0]), edges, sigma, form)


class TestSigmaDefaults:
    @pytest.mark.parametrize("alpha", [0.1, 0.0, 0.5])
    def test_code_form_full_loss_takes_the_released_sigma(self, alpha):
        """The released TIE_KD_loss builds L_DPM_loss without a sigma: 0.5 on every dataset."""
        value, why = dpm_sigma(None, "code", paper_sigma=0.8, alpha=alpha)
        assert value == RELEASED_CODE_SIGMA == 0.5 and "released" in why

    @pytest.mark.parametrize("paper_sigma", [0.8, 0.15])
    def test_code_form_dpm_only_takes_the_configured_sigma(self, paper_sigma):
        """The released L_DPM-only configs build L_DPM_loss(sigma=0.8 KITTI / 0.15 NYU), which uses it."""
        value, why = dpm_sigma(None, "code", paper_sigma=paper_sigma, alpha=1.0)
        assert value == paper_sigma and "L_DPM only" in why

    @pytest.mark.parametrize("alpha", [0.1, 1.0])
    def test_paper_form_defaults_to_the_dataset_sigma(self, alpha):
        assert dpm_sigma(None, "paper", paper_sigma=0.15, alpha=alpha)[0] == 0.15

    @pytest.mark.parametrize("form", DPM_FORMS)
    def test_an_explicit_sigma_wins(self, form):
        value, why = dpm_sigma(0.3, form, paper_sigma=0.8, alpha=1.0)
        assert value == 0.3 and "--sigma" in why


class TestStudentSide:
    def test_expected_depth_matches_numpy(self, edges):
        logits = torch.randn(2, N_BINS, 3, 4, generator=torch.Generator().manual_seed(2)) * 4
        z = logits.double().numpy()
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        expected = np.einsum("bkhw,k->bhw", p, bin_centres(edges).double().numpy())[:, None]
        depth = expected_depth(logits, bin_centres(edges))
        assert depth.shape == (2, 1, 3, 4)
        np.testing.assert_allclose(depth.numpy(), expected, rtol=1e-5)

    def test_expected_depth_of_teacher_log_dpm_is_teacher_mean(self, edges):
        dpm = teacher_dpm(depth_map([12.5, 33.3]), edges, SIGMA)
        depth = expected_depth(torch.log(dpm.clamp_min(1e-30)), bin_centres(edges))
        np.testing.assert_allclose(depth.flatten().numpy(), [12.5, 33.3], atol=1e-3)

    def test_entropy_matches_numpy(self):
        logits = torch.randn(2, 9, 3, 4, generator=torch.Generator().manual_seed(3)) * 3
        z = logits.double().numpy()
        log_p = z - z.max(axis=1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        expected = -(np.exp(log_p) * log_p).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(dpm_entropy(logits).numpy(), expected, rtol=1e-5)

    def test_entropy_extremes(self):
        flat = torch.zeros(1, N_BINS, 1, 1)
        assert dpm_entropy(flat).item() == pytest.approx(math.log(N_BINS), rel=1e-6)
        peaked = torch.full((1, N_BINS, 1, 1), -1e4)
        peaked[0, 7] = 1e4
        assert dpm_entropy(peaked).item() == 0.0
