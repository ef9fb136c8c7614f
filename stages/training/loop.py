"""The loop of ``tiekd train-student``: steps, per-epoch validation, logs and checkpoints.

Every process runs this loop; only the writer (:attr:`Processes.is_writer`) logs and writes
checkpoints. Validation is shared: each process scores its share of the split and all of them
gather the scores, so every process holds the same result (the one a single process gives) and
they agree on ``best``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader

from tiekd.data.datasets import EvaluationSamples, raise_batch_errors
from tiekd.data.registry import get_dataset
from tiekd.pipeline.checkpoint import save_checkpoint
from tiekd.stages.evaluation import StudentPredictor, evaluate
from tiekd.stages.packed_inputs import packed_source, packed_store
from tiekd.stages.runtime import progress
from tiekd.stages.training.board import PictureCollector, entropy_bins
from tiekd.stages.training.config import TrainStudentConfig
from tiekd.stages.training.distributed import gathered
from tiekd.stages.training.log import RunLog
from tiekd.stages.training.trainer import Trainer


@dataclass
class TrainSummary:
    out: Path
    steps: int
    seconds: float
    last_loss: float
    validation: dict | None
    steps_taken: int = 0
    """Steps this invocation took (fewer than ``steps`` after a resume; 0 for a finished run)."""
    is_writer: bool = True
    """From the process that wrote the run directory (the one that reports it)."""


def _validate(trainer: Trainer, cfg: TrainStudentConfig, pictures: PictureCollector | None = None) -> dict:
    """Validation metrics over the whole split, each process scoring records rank, rank + world
    size, ...; ``pictures`` (an on_image callback) draws the first images of this process's share."""
    dataset = get_dataset(cfg.dataset)
    records = dataset.read_split(cfg.val_split)
    data_root = cfg.val_data_root or cfg.data_root
    store = packed_store(data_root=data_root, inputs=cfg.inputs, cache=cfg.cache)
    packed = packed_source(store, cfg.val_split, None, with_gt=True)
    samples = EvaluationSamples(records, data_root, cfg.val_gt_root or cfg.gt_root, dataset=dataset, packed=packed)
    result = evaluate(
        StudentPredictor(trainer.model, scale=cfg.scale),
        samples,
        device=trainer.device,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        show_progress=False,
        on_image=pictures,
        shard=(trainer.processes.rank, trainer.processes.world_size),
        gather=gathered,
    )
    trainer.model.train()
    return result.metrics


def _end_of_epoch(
    trainer: Trainer, cfg: TrainStudentConfig, log: RunLog | None, losses: list[float], best: dict
) -> dict | None:
    """Validate (every process its share), log the epoch and write last.pt (and best.pt, without
    the optimizer's state, when validation improves)."""
    writer = trainer.processes.is_writer
    pictures = PictureCollector(max_depth=cfg.max_depth, n_bins=entropy_bins(trainer.model)) if writer else None
    metrics = _validate(trainer, cfg, pictures) if cfg.val_split else None
    improved = bool(metrics) and metrics["rmse"] < best.get("rmse", math.inf)
    if improved:
        best.update(rmse=metrics["rmse"], step=trainer.step)
    if writer:
        if improved:
            save_checkpoint(cfg.out / "best.pt", trainer.inference_state() | {"best": best})
        save_checkpoint(cfg.out / "last.pt", trainer.state() | {"best": best})
        record = {
            "step": trainer.step,
            "epoch": math.ceil(trainer.step / trainer.steps_per_epoch),
            "loss": sum(losses) / max(len(losses), 1),
        }
        log.epoch(record | ({"val": metrics} if metrics else {}))
        if pictures.pictures:
            log.pictures(trainer.step, pictures.pictures)
    losses.clear()
    return metrics


def _steps(loader: DataLoader, accumulate: int):
    """The loader's micro-batches, ``accumulate`` consecutive ones (a list) per optimisation step."""
    group = []
    for batch in loader:
        raise_batch_errors(batch)
        group.append(batch)
        if len(group) == accumulate:
            yield group
            group = []


def train(trainer: Trainer, cfg: TrainStudentConfig, loader: DataLoader, log: RunLog | None, best: dict) -> TrainSummary:
    """Take the run's remaining steps; ``log`` is the writer's (None in the other processes)."""
    start, metrics, waited, first_step = time.perf_counter(), None, 0.0, trainer.step
    losses = log.losses_after(trainer.step - trainer.step % trainer.steps_per_epoch) if log else []
    trainer.model.train()
    loss = math.nan
    label = f"training {cfg.student} ({cfg.method})"
    with progress(trainer.total_steps - trainer.step, label, quiet=log is None) as bar:
        tick = time.perf_counter()
        for micro_batches in _steps(loader, cfg.accumulate):
            wait = time.perf_counter() - tick
            waited += wait
            for group in trainer.watched:
                group.require_unchanged()  # no step on another teacher's maps or other packed frames
            lr = trainer.scheduler.get_last_lr()[0]
            loss, terms = trainer.train_step(micro_batches)
            step_time = time.perf_counter() - tick
            losses.append(loss)
            if log:
                record = {"step": trainer.step, "loss": loss, **terms, "lr": lr}
                log.step(record | {"step_seconds": step_time, "data_seconds": wait})
            share = waited / max(time.perf_counter() - start, 1e-9)
            bar.update(1, f"loss {loss:.4f}, {step_time:.2f} s/step, {share:.0%} waiting for data")
            if trainer.step % trainer.steps_per_epoch == 0 or trainer.step == trainer.total_steps:
                metrics = _end_of_epoch(trainer, cfg, log, losses, best) or metrics
            elif trainer.step % cfg.save_every == 0 and trainer.processes.is_writer:
                save_checkpoint(cfg.out / "last.pt", trainer.state() | {"best": best})
            tick = time.perf_counter()
    return TrainSummary(
        out=cfg.out,
        steps=trainer.step,
        seconds=time.perf_counter() - start,
        last_loss=loss,
        validation=metrics,
        steps_taken=trainer.step - first_step,
        is_writer=trainer.processes.is_writer,
    )
