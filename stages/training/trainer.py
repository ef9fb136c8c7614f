"""One training run's objects and its optimisation step (used by ``tiekd train-student``)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from tiekd.pipeline.errors import CheckpointError, TrainingError
from tiekd.pipeline.methods import Objective
from tiekd.stages.training.config import TrainStudentConfig
from tiekd.stages.training.distributed import SINGLE, Processes, accumulating, mean_over_processes

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
    """Identity of the teacher cache the run trains from (stages/training/identity.py), kept in checkpoints."""
    watched: tuple = ()
    """The store groups the run reads (every teacher of a mixture, each --unlabelled group, a packed split),
    each checked before every step with its ``require_unchanged()``: removed or replaced, the run stops."""
    processes: Processes = SINGLE
    replica: torch.nn.Module | None = None
    """The module the step runs: DDP around ``model`` in a process group, else ``model`` itself."""
    autocast: torch.dtype | None = None
    """The dtype the forward pass runs in under autocast (--amp), None for float32; the loss is float32."""
    init_from: dict | None = None
    """The checkpoint the weights started from (``--init-from``: path, SHA-256, its step and dataset)."""

    @property
    def start_weights(self) -> str | None:
        """timm name and tag of the weights the encoder started from; None without --pretrained
        and with --init-from (run.json's ``init_from`` names the checkpoint)."""
        return self.model.start_weights if self.cfg.pretrained and self.cfg.init_from is None else None

    @property
    def global_batch(self) -> int:
        """Samples per optimisation step: processes x batch size x accumulated micro-batches."""
        return self.processes.world_size * self.cfg.batch_size * self.cfg.accumulate

    def state(self) -> dict:
        """The checkpoint dict of the run at its current step: what inference needs and what
        resuming needs (optimizer, scheduler, scaler), as last.pt holds it."""
        return self.inference_state() | {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def inference_state(self) -> dict:
        """What evaluating, explaining and exporting the student needs, as best.pt holds it: the
        weights, architecture, normalisation and config, without the optimizer's state (two
        thirds of last.pt: AdamW keeps two moments per weight)."""
        return {
            "model": self.model.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "global_batch": self.global_batch,
            "config": config_dict(self.cfg),
            "architecture": self.model.arch,
            "start_weights": self.start_weights,
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
        raise TrainingError(
            f"{what} at step {self.step + 1}; stopped without saving, {kept} (lower --lr or check {check})"
        )

    def _micro_step(self, batch: dict, weight: float, more_to_come: bool) -> dict[str, float]:
        """Forward and backward of one micro-batch, its loss weighted by ``weight``; returns
        the micro-batch's loss and terms (unweighted)."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        if self.cfg.channels_last:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        replica = self.model if self.replica is None else self.replica  # (a compiled module has no truth value)
        with accumulating(replica, more_to_come):
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                output = replica(batch["image"])
            loss, terms = self.objective.loss(output.float(), batch)
            self.scaler.scale(loss * weight).backward()
        return {"loss": float(loss.detach())} | terms

    def train_step(self, batch: dict | list[dict]) -> tuple[float, dict]:
        """One optimisation step on a batch, or on the micro-batches accumulated into one step;
        returns (loss, terms), each the mean over micro-batches and processes, and the terms also
        hold ``grad_norm``, the global gradient norm before clipping.

        The loss is averaged over all processes before it is checked, so all stop together; a
        non-finite loss or gradient stops before the optimiser changes any weight.
        """
        micro_batches = batch if isinstance(batch, list) else [batch]
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, micro in enumerate(micro_batches):
            values = self._micro_step(micro, 1 / len(micro_batches), more_to_come=i < len(micro_batches) - 1)
            sums = {name: sums.get(name, 0.0) + value for name, value in values.items()}
        means = mean_over_processes([value / len(micro_batches) for value in sums.values()], self.device)
        loss, terms = means[0], dict(zip(list(sums)[1:], means[1:]))
        if not math.isfinite(loss):
            self._stop(f"the loss became {loss}")
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP_NORM)
        # With loss scaling, inf gradients are expected now and then: the scaler skips those steps.
        if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            self._stop(f"the gradient norm became {float(grad_norm)}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return loss, terms | {"grad_norm": float(grad_norm)}
