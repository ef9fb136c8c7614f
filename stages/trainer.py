"""One training run's objects and its optimisation step (used by ``tiekd train-student``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tiekd.pipeline.errors import CheckpointError, TrainingError
from tiekd.pipeline.methods import Objective

if TYPE_CHECKING:
    from tiekd.stages.train_student import TrainStudentConfig

# The authors' schedule (method.md section 7).
ADAMW_BETAS = (0.95, 0.99)
WEIGHT_DECAY = 0.01
ONECYCLE_DIV = 25.0
"""Initial lr = max lr / 25."""
ONECYCLE_FINAL_DIV = 100.0
"""Final lr = initial lr / 100."""
ONECYCLE_WARMUP = 0.3
"""Share of the steps spent warming up."""
GRAD_CLIP_NORM = 35.0


def optimisation(model: torch.nn.Module, cfg: TrainStudentConfig, total_steps: int):
    """AdamW and the one-cycle schedule of the authors (method.md section 7)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=ADAMW_BETAS, weight_decay=WEIGHT_DECAY)
    # cycle_momentum=False keeps AdamW's betas as the authors configured them.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=cfg.lr,
        total_steps=total_steps,
        pct_start=ONECYCLE_WARMUP,
        div_factor=ONECYCLE_DIV,
        final_div_factor=ONECYCLE_FINAL_DIV,
        anneal_strategy="cos",
        cycle_momentum=False,
    )
    return optimizer, scheduler


def config_dict(cfg) -> dict:
    """A config dataclass as plain JSON values (paths as text), for run.json and checkpoints."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


@dataclass
class Trainer:
    """The objects of one run and the step they are at."""

    cfg: TrainStudentConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    objective: Objective
    device: torch.device
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    cache: dict | None = None
    """Identity of the teacher cache the run trains from (stages/run_identity.py), kept in checkpoints."""

    def state(self) -> dict:
        """The checkpoint dict of the run at its current step."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "config": config_dict(self.cfg),
            "architecture": self.model.arch,
            "normalisation": self.model.normalisation,
            "input_scale": self.cfg.scale,
            "cache": self.cache,
        }

    def load(self, state: dict, path: Path) -> None:
        """Continue from a checkpoint of the same architecture."""
        if state["architecture"] != self.model.arch:
            raise CheckpointError(
                f"{path} holds a {state['architecture']} student, this run builds {self.model.arch}; "
                "resume with the options the run was started with, or use another --out"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]

    def _stop(self, what: str) -> None:
        """Refuse to take step ``self.step + 1``: the weights and the checkpoint stay as they were."""
        last = self.cfg.out / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
        check = "the cache with `tiekd cache verify`" if self.cfg.method != "supervised" else "the GT under --gt-root"
        raise TrainingError(f"{what} at step {self.step + 1}; stopped without saving, {kept} (lower --lr or check {check})")

    def train_step(self, batch: dict) -> tuple[float, dict]:
        """One optimisation step; returns (loss, terms)."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.scaler.is_enabled()):
            output = self.model(batch["image"])
        loss, terms = self.objective.loss(output.float(), batch)
        if not torch.isfinite(loss):
            self._stop(f"the loss became {float(loss.detach())}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP_NORM)
        # With loss scaling, inf gradients are expected now and then: the scaler skips those steps.
        if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            self._stop(f"the gradient norm became {float(grad_norm)}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return float(loss.detach()), terms
