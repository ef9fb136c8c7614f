"""Tests of tiekd.pipeline.methods: the factor on each method's loss and the SSIM form it reaches."""

import pytest
import torch

from tiekd.pipeline.dpm import bin_edges
from tiekd.pipeline.losses import TIEKD_SCALE, response_loss, supervised_si_loss, tiekd_loss_terms
from tiekd.pipeline.methods import Objective, loss_scale


class TestLossScale:
    @pytest.mark.parametrize("alpha", [0.0, 1.0])
    def test_released_ablations_have_no_x10(self, alpha):
        """Released: L_DPM only is the mean KL, L_Depth only 1 - SSIM (TIE-KD tie_kd_loss.py l.73 has the x10)."""
        value, why = loss_scale(None, "tiekd", form="code", alpha=alpha)
        assert value == 1.0 and "no x10" in why

    @pytest.mark.parametrize("form, alpha", [("code", 0.1), ("paper", 0.0), ("paper", 1.0), ("paper", 0.1)])
    def test_full_loss_and_the_paper_form_keep_it(self, form, alpha):
        assert loss_scale(None, "tiekd", form=form, alpha=alpha)[0] == TIEKD_SCALE == 10.0

    @pytest.mark.parametrize("method", ["res-si", "res-ssim-si", "supervised"])
    def test_other_methods_default_to_one_and_an_explicit_scale_wins(self, method):
        assert loss_scale(None, method, form="code", alpha=1.0)[0] == 1.0
        value, why = loss_scale(1.5, method, form="paper", alpha=0.1)
        assert value == 1.5 and "--loss-scale" in why


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(3)
    teacher = torch.rand(2, 1, 12, 14, generator=generator, dtype=torch.float64) * 40 + 2
    gt = torch.where(torch.rand(teacher.shape, generator=generator) > 0.5, teacher * 1.1, 0.0)
    return {"teacher": teacher, "gt": gt}


class TestObjective:
    @pytest.mark.parametrize("form, alpha, scale", [("code", 1.0, 1.0), ("code", 0.0, 1.0), ("paper", 1.0, 10.0)])
    def test_tiekd_total_is_scaled_terms(self, batch, form, alpha, scale):
        edges = bin_edges(1e-3, 80.0, 17)
        logits = torch.randn(2, 17, 12, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        objective = Objective(method="tiekd", edges=edges, alpha=alpha, sigma=0.8, dpm_form=form, top_row=2)
        loss, logged = objective.loss(logits, batch)
        teacher = batch["teacher"][..., 2:, :]
        terms = tiekd_loss_terms(logits[..., 2:, :], teacher, edges, alpha=alpha, sigma=0.8, form=form, valid=teacher > 0)
        assert loss.item() == pytest.approx(scale * (alpha * terms["dpm"] + (1 - alpha) * terms["depth"]).item())
        assert logged == pytest.approx({"dpm": terms["dpm"].item(), "depth": terms["depth"].item()})

    @pytest.mark.parametrize("form", ["paper", "code"])
    def test_response_loss_takes_form_and_scale(self, batch, form):
        pred = batch["teacher"] * 1.2 + 0.5
        objective = Objective(method="res-ssim-si", dpm_form=form, scale=1.5)
        expected = 1.5 * response_loss("res-ssim-si", pred, batch["teacher"], valid=batch["teacher"] > 0, form=form)
        assert objective.loss(pred, batch)[0].item() == pytest.approx(expected.item(), rel=1e-12)
        other = response_loss("res-ssim-si", pred, batch["teacher"], form={"paper": "code", "code": "paper"}[form])
        assert expected.item() != pytest.approx(1.5 * other.item(), rel=1e-9)

    def test_supervised_loss_is_scaled(self, batch):
        pred = batch["teacher"] * 0.9
        loss, logged = Objective(method="supervised", scale=2.0).loss(pred, batch)
        si = supervised_si_loss(pred, batch["gt"]).item()
        assert (loss.item(), logged["si"]) == pytest.approx((2 * si, si))
