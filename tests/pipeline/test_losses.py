"""Tests of tiekd.pipeline.losses: SSIM, the lean TIE-KD loss, the response-KD and supervised losses.

References are independent: SSIM and the response losses in float64 NumPy, the TIE-KD loss as the
naive whole-tensor form (softmax, log(p + 1e-7), elementwise KL, autograd), both written here.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiekd.pipeline import losses
from tiekd.pipeline.dpm import bin_centres, bin_edges, teacher_dpm
from tiekd.pipeline.losses import (
    RESPONSE_LOSSES,
    dpm_distillation_maps,
    response_loss,
    ssim,
    ssim_map,
    supervised_si_loss,
    tiekd_loss,
    tiekd_loss_terms,
)

MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0
N_BINS = 33  # fewer bins than KITTI's 257 keep the tests fast; the code does not depend on K
SIGMA = 0.8  # KITTI's paper-form DPM sigma in metres


@pytest.fixture(scope="module")
def edges():
    return bin_edges(MIN_DEPTH, MAX_DEPTH, N_BINS)


def make_inputs(dtype=torch.float32, shape=(2, 9, 13), seed=0):
    """Random logits (B, K, H, W) and a smooth teacher depth map (B, 1, H, W) in metres."""
    generator = torch.Generator().manual_seed(seed)
    batch, height, width = shape
    logits = torch.randn(batch, N_BINS, height, width, generator=generator, dtype=dtype) * 3
    ramp = torch.linspace(5.0, 70.0, height, dtype=dtype).view(1, 1, -1, 1)
    teacher = ramp + 4 * torch.rand(batch, 1, height, width, generator=generator, dtype=dtype)
    return logits.requires_grad_(), teacher


def naive_tiekd_loss(logits, teacher_depth, edges, *, alpha=0.1, sigma=SIGMA, form="paper", valid=None):
    """Whole-tensor reference: 10 * (alpha * mean KL(t || s) + (1 - alpha) * (1 - SSIM))."""
    teacher = teacher_dpm(teacher_depth, edges, sigma, form)
    student = torch.softmax(logits, dim=1)
    kl = F.kl_div(torch.log(student + 1e-7), teacher, reduction="none").sum(dim=1, keepdim=True)
    depth = (student * bin_centres(edges).to(logits.dtype).view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
    # SSIM windows see the student's own depth where the teacher is missing.
    target = teacher_depth if valid is None else torch.where(valid, teacher_depth, depth.detach())
    similarity = ssim_map(depth, target, form=form)
    if valid is None:
        return 10 * (alpha * kl.mean() + (1 - alpha) * (1 - similarity.mean()))
    return 10 * (alpha * kl[valid].mean() + (1 - alpha) * (1 - similarity[valid].mean()))


def numpy_ssim_map(x, y, abs_variance=False, dtype=np.float64):
    """SSIM of two (H, W) maps: 11x11 Gaussian window (sigma 1.5), zero padding, C1, C2.

    With ``dtype`` float32 and ``abs_variance`` it is the released ``depth/models/losses/ssim.py``
    (TIE-KD @ 989ec03 l.14-47): a float32 2-D window, float32 moments, abs() of both variances and
    the covariance.
    """
    profile = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = (np.outer(profile, profile) / profile.sum() ** 2).astype(dtype)
    x, y = x.astype(dtype), y.astype(dtype)
    height, width = x.shape

    def local_mean(a):
        padded = np.pad(a, 5)
        return sum(window[i, j] * padded[i : i + height, j : j + width] for i in range(11) for j in range(11))

    mx, my = local_mean(x), local_mean(y)
    vx, vy, cov = local_mean(x * x) - mx**2, local_mean(y * y) - my**2, local_mean(x * y) - mx * my
    if abs_variance:
        vx, vy, cov = np.abs(vx), np.abs(vy), np.abs(cov)
    c1, c2 = dtype(0.01**2), dtype(0.03**2)
    return (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def numpy_ssim(x, y, valid=None, abs_variance=False, dtype=np.float64):
    """Mean SSIM over the valid pixels of (B, 1, H, W) tensors; y outside them is taken as x."""
    if valid is not None:
        y = torch.where(valid, y, x)
    pairs = zip(x.double().numpy(), y.double().numpy())
    maps = np.stack([numpy_ssim_map(a[0], b[0], abs_variance, dtype) for a, b in pairs]).astype(np.float64)
    return maps[valid[:, 0].numpy()].mean() if valid is not None else maps.mean()


def released_ssim_map(img1, img2):
    """The released SSIM map, copied from TIE-KD @ 989ec03 ``depth/models/losses/ssim.py`` l.14-44
    (``gaussian``, ``create_window``, ``_ssim`` before its mean), names kept."""
    gauss = torch.Tensor([math.exp(-((x - 11 // 2) ** 2) / float(2 * 1.5**2)) for x in range(11)])
    _1d_window = (gauss / gauss.sum()).unsqueeze(1)
    window = _1d_window.mm(_1d_window.t()).float().unsqueeze(0).unsqueeze(0).expand(1, 1, 11, 11).contiguous()
    mu1 = F.conv2d(img1, window, padding=11 // 2, groups=1)
    mu2 = F.conv2d(img2, window, padding=11 // 2, groups=1)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = abs(F.conv2d(img1 * img1, window, padding=11 // 2, groups=1) - mu1_sq)
    sigma2_sq = abs(F.conv2d(img2 * img2, window, padding=11 // 2, groups=1) - mu2_sq)
    sigma12 = abs(F.conv2d(img1 * img2, window, padding=11 // 2, groups=1) - mu1_mu2)
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))


def numpy_si(pred, target):
    """sqrt(Var(g) + 0.15 mean(g)^2), g = ln(pred + 1e-3) - ln(target + 1e-3), unbiased variance."""
    g = np.log(pred + 1e-3) - np.log(target + 1e-3)
    return math.sqrt(g.var(ddof=1) + 0.15 * g.mean() ** 2)


class TestSsim:
    def test_identical_maps_give_one(self):
        _, teacher = make_inputs()
        for form in ("paper", "code"):
            assert ssim(teacher, teacher, form=form).item() == pytest.approx(1.0, abs=1e-6)

    def test_matches_numpy(self):
        generator = torch.Generator().manual_seed(4)
        x = torch.rand(2, 1, 17, 23, generator=generator, dtype=torch.float64) * 60 + 1
        y = x + torch.randn(2, 1, 17, 23, generator=generator, dtype=torch.float64)
        expected = numpy_ssim(x, y)
        assert ssim(x, y).item() == pytest.approx(expected, abs=1e-12)
        assert ssim(x.float(), y.float()).item() == pytest.approx(expected, abs=1e-5)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_code_form_is_the_released_float32_ssim(self, dtype):
        """abs() variances, float32 and the released order of operations, whatever the input dtype."""
        generator = torch.Generator().manual_seed(4)
        x = torch.rand(2, 1, 17, 23, generator=generator, dtype=torch.float64) * 20 + 1
        y = x + torch.randn(2, 1, 17, 23, generator=generator, dtype=torch.float64)
        released = released_ssim_map(x.float(), y.float())
        torch.testing.assert_close(ssim_map(x.to(dtype), y.to(dtype), form="code"), released.to(dtype), rtol=0, atol=0)
        assert released.mean().item() == pytest.approx(numpy_ssim(x, y, abs_variance=True), abs=2e-6)

    def test_flat_far_region_keeps_float64_precision(self):
        """Far (60 m) nearly flat depth: float32 moments are off by a large fraction of C2. The paper
        form keeps the float64 value; the code form gives the released float32 loss's value."""
        generator = torch.Generator().manual_seed(2)
        y = torch.full((1, 1, 24, 24), 60.0, dtype=torch.float64)
        x = y + 0.01 * torch.randn(1, 1, 24, 24, generator=generator, dtype=torch.float64)
        exact = numpy_ssim(x.float(), y.float())
        assert ssim(x.float(), y.float()).item() == pytest.approx(exact, abs=1e-5)
        code = ssim(x.float(), y.float(), form="code").item()
        assert code == released_ssim_map(x.float(), y.float()).mean().item()
        assert abs(code - numpy_ssim(x.float(), y.float(), abs_variance=True)) > 0.005

    def test_unknown_form_raises(self):
        _, teacher = make_inputs()
        with pytest.raises(ValueError):
            ssim(teacher, teacher, form="float16")

    def test_valid_mask_averages_valid_pixels(self):
        generator = torch.Generator().manual_seed(6)
        x = torch.rand(2, 1, 15, 16, generator=generator, dtype=torch.float64) * 30 + 1
        y = torch.rand(2, 1, 15, 16, generator=generator, dtype=torch.float64) * 30 + 1
        valid = torch.rand(2, 1, 15, 16, generator=generator) > 0.3
        assert ssim(x, y, valid=valid).item() == pytest.approx(numpy_ssim(x, y, valid), abs=1e-12)

    def test_gradient_at_valid_pixels_ignores_missing_target_values(self):
        """A rotated-in corner of missing target: what fills it (0, e_0, far) must not pull valid pixels."""
        generator = torch.Generator().manual_seed(8)
        x = (torch.rand(1, 1, 16, 20, generator=generator, dtype=torch.float64) * 30 + 5).requires_grad_()
        y = x.detach() + torch.randn(1, 1, 16, 20, generator=generator, dtype=torch.float64)
        rows, cols = torch.meshgrid(torch.arange(16), torch.arange(20), indexing="ij")
        valid = (rows + cols >= 6).view(1, 1, 16, 20)  # a missing triangle in the top-left corner
        gradients = []
        for fill in (0.0, 1e-3, 80.0):
            (gradient,) = torch.autograd.grad(ssim(x, torch.where(valid, y, fill), valid=valid), x)
            gradients.append(gradient[valid])
        torch.testing.assert_close(gradients[0], gradients[1], rtol=0, atol=0)
        torch.testing.assert_close(gradients[0], gradients[2], rtol=0, atol=0)

    def test_gradient_flows_to_both_inputs(self):
        x = (torch.rand(1, 1, 12, 12, dtype=torch.float64) * 10).requires_grad_()
        y = (torch.rand(1, 1, 12, 12, dtype=torch.float64) * 10).requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: ssim(a, b), (x, y))


class TestTiekdLoss:
    @pytest.mark.parametrize("form", ["paper", "code"])
    def test_value_and_gradient_equal_naive_float64(self, edges, form, monkeypatch):
        monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 2 * N_BINS * 13 * 4)  # 4 rows a chunk: 3 chunks, last partial
        logits, teacher = make_inputs(torch.float64)
        lean = tiekd_loss(logits, teacher, edges, sigma=0.8, form=form)
        (lean_grad,) = torch.autograd.grad(lean, logits)
        naive = naive_tiekd_loss(logits, teacher, edges, sigma=0.8, form=form)
        (naive_grad,) = torch.autograd.grad(naive, logits)
        assert lean.item() == pytest.approx(naive.item(), rel=1e-12)
        torch.testing.assert_close(lean_grad, naive_grad, rtol=1e-9, atol=1e-15)

    def test_value_and_gradient_equal_naive_float32(self, edges):
        logits, teacher = make_inputs(torch.float32, shape=(2, 20, 24))
        lean = tiekd_loss(logits, teacher, edges, sigma=SIGMA)
        (lean_grad,) = torch.autograd.grad(lean, logits)
        naive = naive_tiekd_loss(logits, teacher, edges)
        (naive_grad,) = torch.autograd.grad(naive, logits)
        assert lean.item() == pytest.approx(naive.item(), rel=1e-5)
        torch.testing.assert_close(lean_grad, naive_grad, rtol=1e-4, atol=1e-8)

    @pytest.mark.parametrize("form", ["paper", "code"])
    def test_gradcheck(self, edges, form, monkeypatch):
        monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 2 * N_BINS * 4 * 2)  # 2 rows a chunk, then 1
        logits, teacher = make_inputs(torch.float64, shape=(2, 3, 4))
        # The code form's SSIM is float32 (the released loss's), beyond finite differences in float64.
        alpha = 0.3 if form == "paper" else 1.0
        assert torch.autograd.gradcheck(
            lambda z: tiekd_loss(z, teacher, edges, alpha=alpha, sigma=1.5, form=form), (logits,)
        )
        # Under a mask SSIM's target is the detached student depth where the teacher is missing (a
        # stop-gradient finite differences do not see), so the masked loss is checked on its KL term.
        valid = teacher > 20
        assert torch.autograd.gradcheck(
            lambda z: tiekd_loss(z, teacher, edges, alpha=1.0, sigma=1.5, form=form, valid=valid), (logits,)
        )

    def test_terms_and_options_reach_the_loss(self, edges):
        logits, teacher = make_inputs(torch.float64)
        terms = tiekd_loss_terms(logits, teacher, edges, alpha=0.25, sigma=0.5, form="code")
        assert terms["total"].item() == pytest.approx(10 * (0.25 * terms["dpm"].item() + 0.75 * terms["depth"].item()))
        naive = naive_tiekd_loss(logits, teacher, edges, alpha=0.25, sigma=0.5, form="code")
        assert terms["total"].item() == pytest.approx(naive.item(), rel=1e-12)
        other_sigma = tiekd_loss(logits, teacher, edges, alpha=0.25, sigma=0.8, form="code")
        assert other_sigma.item() != pytest.approx(terms["total"].item(), rel=1e-3)

    def test_kl_of_equal_distributions_is_zero(self, edges):
        _, teacher = make_inputs(torch.float64)
        target = teacher_dpm(teacher, edges, 0.8)
        logits = torch.log(target.clamp_min(1e-300))
        kl, depth = dpm_distillation_maps(logits, teacher, edges, sigma=0.8, form="paper")
        # Exactly sum_i t_i log(t_i / (t_i + 1e-7)): the released code's epsilon, about -K * 1e-7.
        expected = torch.special.xlogy(target, target / (target + 1e-7)).sum(dim=1, keepdim=True)
        torch.testing.assert_close(kl, expected, rtol=1e-9, atol=1e-15)
        assert kl.abs().max() < 1e-5
        expected_depth = (target * bin_centres(edges).double().view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
        torch.testing.assert_close(depth, expected_depth)

    def test_valid_mask_is_respected(self, edges):
        logits, teacher = make_inputs(torch.float64)
        valid = torch.ones_like(teacher, dtype=torch.bool)
        valid[:, :, :3] = False
        loss = tiekd_loss(logits, teacher, edges, valid=valid, sigma=SIGMA)
        placeholder = torch.where(valid, teacher, edges[0].double())  # what the SSIM windows see there
        naive = naive_tiekd_loss(logits, placeholder, edges, valid=valid)
        assert loss.item() == pytest.approx(naive.item(), rel=1e-12)
        poisoned = teacher.clone()
        poisoned[~valid] = float("nan")
        kl_only = tiekd_loss(logits, poisoned, edges, alpha=1.0, valid=valid, sigma=SIGMA)
        (grad,) = torch.autograd.grad(kl_only, logits)
        assert torch.isfinite(grad).all()
        assert (grad[:, :, :3] == 0).all() and (grad[:, :, 3:] != 0).any()
        assert kl_only.item() == pytest.approx(
            tiekd_loss(logits, teacher, edges, alpha=1.0, valid=valid, sigma=SIGMA).item()
        )

    @pytest.mark.parametrize("form", ["paper", "code"])
    def test_a_student_matching_the_teacher_where_it_exists_has_no_depth_loss(self, edges, form):
        """Teacher missing in a corner (filled with 0): the SSIM term of a student that equals the
        teacher on every valid pixel is 0 and pulls no pixel (before the fix it pulled toward e_0)."""
        logits, _ = make_inputs(torch.float64)
        with torch.no_grad():
            teacher = (torch.softmax(logits, 1) * bin_centres(edges).double().view(1, -1, 1, 1)).sum(1, keepdim=True)
        rows = torch.arange(teacher.shape[-2]).view(1, 1, -1, 1)
        valid = (rows >= 3).expand_as(teacher)
        terms = tiekd_loss_terms(
            logits, torch.where(valid, teacher, 0.0), edges, alpha=0.0, form=form, valid=valid, sigma=SIGMA
        )
        (gradient,) = torch.autograd.grad(terms["total"], logits)
        assert terms["depth"].item() == pytest.approx(0.0, abs=1e-12)
        assert gradient.abs().max().item() < {"paper": 1e-9, "code": 1e-6}[form]  # code: float32 SSIM rounding

    def test_teacher_gets_no_gradient(self, edges):
        logits, teacher = make_inputs()
        teacher.requires_grad_()
        tiekd_loss(logits, teacher, edges, sigma=SIGMA).backward()
        assert teacher.grad is None
        assert logits.grad is not None and torch.isfinite(logits.grad).all()

    @pytest.mark.parametrize("form", ["paper", "code"])
    @pytest.mark.parametrize("depth", [0.0, MIN_DEPTH, MAX_DEPTH, 200.0])
    def test_finite_at_range_edges(self, edges, form, depth):
        logits, _ = make_inputs()
        teacher = torch.full((2, 1, 9, 13), depth)
        loss = tiekd_loss(logits, teacher, edges, form=form, sigma=SIGMA)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()

    def test_autocast_computes_in_float32(self, edges):
        logits, teacher = make_inputs()
        half_logits = logits.detach().bfloat16().requires_grad_()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            loss = tiekd_loss(half_logits, teacher, edges, sigma=SIGMA)
        loss.backward()
        assert loss.dtype == torch.float32 and half_logits.grad.dtype == torch.bfloat16
        reference_logits = half_logits.detach().float().requires_grad_()
        reference = tiekd_loss(reference_logits, teacher, edges, sigma=SIGMA)
        reference.backward()
        assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
        torch.testing.assert_close(half_logits.grad, reference_logits.grad.bfloat16())

    @pytest.mark.parametrize("kwargs", [{"form": "gaussian"}, {"sigma": 0.0}])
    def test_bad_options_raise(self, edges, kwargs):
        logits, teacher = make_inputs()
        with pytest.raises(ValueError):
            tiekd_loss(logits, teacher, edges, **({"sigma": SIGMA} | kwargs))


class TestResponseLosses:
    @pytest.fixture
    def maps(self):
        generator = torch.Generator().manual_seed(7)
        teacher = torch.rand(2, 1, 14, 15, generator=generator, dtype=torch.float64) * 50 + 2
        pred = (teacher * (1 + 0.2 * torch.randn(teacher.shape, generator=generator, dtype=torch.float64))).abs()
        valid = torch.rand(teacher.shape, generator=generator) > 0.25
        return pred.requires_grad_(), teacher, valid

    @staticmethod
    def numpy_reference(name, pred, teacher, valid, form="paper"):
        p, t = pred.detach().numpy(), teacher.numpy()
        mask = valid.numpy() if valid is not None else np.ones(p.shape, bool)
        mse = ((p - t) ** 2)[mask].mean()
        si = numpy_si(p[mask], t[mask])
        ssim_term = 1.5 * (1 - numpy_ssim(pred.detach(), teacher, valid, abs_variance=form == "code"))
        return {
            "res-mse": mse,
            "res-si": si,
            "res-ssim": ssim_term,
            "res-ssim-mse": ssim_term + mse,
            "res-ssim-si": ssim_term + si,
        }[name]

    @pytest.mark.parametrize("name", sorted(RESPONSE_LOSSES))
    @pytest.mark.parametrize("masked", [False, True])
    def test_matches_numpy(self, maps, name, masked):
        pred, teacher, valid = maps
        valid = valid if masked else None
        value = response_loss(name, pred, teacher, valid=valid)
        assert value.item() == pytest.approx(self.numpy_reference(name, pred, teacher, valid), rel=1e-10)
        value.backward()
        assert torch.isfinite(pred.grad).all()

    @pytest.mark.parametrize("name", sorted(RESPONSE_LOSSES))
    def test_code_form_uses_the_released_ssim(self, maps, name):
        """As released (issue 17, item 8): every SSIM term is the abs() float32 SSIM; MSE and SI unchanged."""
        pred, teacher, valid = maps
        value = response_loss(name, pred, teacher, valid=valid, form="code")
        expected = self.numpy_reference(name, pred, teacher, valid, form="code")
        assert value.item() == pytest.approx(expected, rel=1e-5)

    def test_names(self):
        assert set(RESPONSE_LOSSES) == {"res-mse", "res-si", "res-ssim", "res-ssim-mse", "res-ssim-si"}

    def test_teacher_gets_no_gradient(self, maps):
        pred, teacher, _ = maps
        teacher.requires_grad_()
        response_loss("res-ssim-si", pred, teacher).backward()
        response_loss("res-ssim-mse", pred, teacher, form="code").backward()
        assert teacher.grad is None

    def test_supervised_si_uses_lidar_pixels_only(self, maps):
        pred, teacher, valid = maps
        gt = torch.where(valid, teacher, 0.0)
        expected = numpy_si(pred.detach().numpy()[valid.numpy()], teacher.numpy()[valid.numpy()])
        assert supervised_si_loss(pred, gt).item() == pytest.approx(expected, rel=1e-10)
