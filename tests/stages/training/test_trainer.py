"""The optimisation step: accumulated micro-batches give the mean of their gradients."""

import copy
import math

import pytest
import torch
from support.runs import build, train_config

from tiekd.stages.training.trainer import GRAD_CLIP_NORM

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_accumulated_step_takes_the_mean_gradient_of_its_micro_batches(sample, store, tmp_path):  # noqa: F811
    trainer, loader = build(train_config(sample, store, tmp_path, batch_size=2, accumulate=2, epochs=4))
    batches = iter(loader)
    micro = [next(batches), next(batches)]
    independent = copy.deepcopy(trainer.model)
    loss, terms = trainer.train_step(micro)

    losses, gradients = [], []
    for batch in micro:  # each micro-batch on its own, as a process of a DDP run would take it
        independent.zero_grad()
        micro_loss, _ = trainer.objective.loss(independent(batch["image"]), batch)
        micro_loss.backward()
        losses.append(float(micro_loss.detach()))
        gradients.append({name: p.grad.double() for name, p in independent.named_parameters()})
    mean = {name: (gradients[0][name] + gradients[1][name]) / 2 for name in gradients[0]}
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in mean.values()))
    assert abs(losses[0] - losses[1]) > 1e-4, "two different micro-batches, told apart by the check below"
    assert loss == pytest.approx((losses[0] + losses[1]) / 2, rel=1e-6)
    assert terms["grad_norm"] == pytest.approx(norm, rel=1e-5)
    clip = min(1.0, GRAD_CLIP_NORM / (norm + 1e-6))
    for name, parameter in trainer.model.named_parameters():
        torch.testing.assert_close(parameter.grad.double(), mean[name] * clip, rtol=1e-4, atol=1e-7)
    assert trainer.step == 1 and trainer.steps_per_epoch == 2  # 8 frames, global batch 4
