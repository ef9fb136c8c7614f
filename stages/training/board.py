"""TensorBoard records of a training run, written next to ``steps.jsonl`` in the run directory.

Every step: its loss terms (``train/...``), learning rate, step and data-wait seconds
(``time/...``); every epoch: the mean training loss and the validation metrics (``val/...``) and a
few validation pictures (``pictures/N``: image, student depth, DPM entropy, relative error against
GT). ``tensorboard --logdir RUN_DIRECTORY`` (or the folder of several runs) shows them.
Only the writing process has a board (it belongs to its :class:`~tiekd.stages.training.log.RunLog`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from tiekd.pipeline.pictures.tiles import depth_image, entropy_image, panel, relative_error_image, rgb_image

VALIDATION_PICTURES = 3
"""Validation images drawn at every epoch: the first ones of the validation split (under torchrun,
of the writer's share: records 0, N, 2N, ... of N processes)."""

PICTURE_WIDTH = 608
"""Tiles wider than this are shrunk to it (half the 1216-pixel KB crop): 24 epochs of pictures
then stay a few tens of MB."""

FLUSH_SECONDS = 10
"""Events reach the disk at least this often (and at every epoch end): a killed run loses little."""

STEP_TAGS = {"lr": "train/lr", "step_seconds": "time/step_seconds", "data_seconds": "time/data_seconds"}
"""Tags of step-record keys outside ``train/``; every other number of a step record is ``train/KEY``."""


class RunBoard:
    """TensorBoard event files in ``out``; on resume, events after ``resume_step`` are dropped."""

    def __init__(self, out: Path, *, resume_step: int | None):
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(out), purge_step=purge, flush_secs=FLUSH_SECONDS)

    def step(self, record: dict) -> None:
        """One step record of steps.jsonl: ``step`` and its numbers (loss terms, lr, seconds)."""
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(STEP_TAGS.get(key, f"train/{key}"), value, record["step"])

    def epoch(self, record: dict) -> None:
        """One record of epochs.jsonl: ``step``, ``epoch``, ``loss`` and maybe ``val`` metrics."""
        step = record["step"]
        self.writer.add_scalar("epoch/loss", record["loss"], step)
        for name, value in record.get("val", {}).items():
            self.writer.add_scalar(f"val/{name}", value, step)
        self.writer.flush()

    def pictures(self, step: int, pictures: list[np.ndarray]) -> None:
        """Validation pictures, uint8 (H, W, 3) each, as ``pictures/0``, ``pictures/1``, ..."""
        for index, picture in enumerate(pictures):
            self.writer.add_image(f"pictures/{index}", picture, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class PictureCollector:
    """An ``on_image`` callback of :func:`tiekd.stages.evaluation.evaluate` that draws the first
    VALIDATION_PICTURES images as one labelled column each: image, student depth, DPM entropy
    (DPM students) and relative error against GT."""

    def __init__(self, *, max_depth: float, n_bins: int | None):
        self.max_depth, self.n_bins = max_depth, n_bins
        self.pictures: list[np.ndarray] = []

    def __call__(self, record, image, depth: np.ndarray, entropy: np.ndarray | None, gt=None) -> None:
        """image uint8 (3, H, W); depth, entropy and gt (H, W) metres / nats (gt 0 = none)."""
        if len(self.pictures) >= VALIDATION_PICTURES:
            return
        tiles = [
            ("image", rgb_image(np.asarray(image).transpose(1, 2, 0))),
            ("student depth", depth_image(depth, max_depth=self.max_depth)),
        ]
        if entropy is not None and self.n_bins:
            tiles.append((f"DPM entropy (0..ln {self.n_bins} nats)", entropy_image(entropy, n_bins=self.n_bins)))
        if gt is not None:
            tiles.append(("|depth - GT| / GT (0..25 %)", relative_error_image(depth, np.asarray(gt))))
        self.pictures.append(np.asarray(panel([(title, fit_width(tile)) for title, tile in tiles])))


def fit_width(tile: Image.Image, width: int = PICTURE_WIDTH) -> Image.Image:
    """The tile shrunk to ``width`` pixels (box filter: plain averages) if it is wider."""
    if tile.width <= width:
        return tile
    return tile.resize((width, round(tile.height * width / tile.width)), Image.Resampling.BOX)


def entropy_bins(model) -> int | None:
    """The student's number of bins (DPM head) or None (regression head)."""
    arch = getattr(model, "arch", {})
    return arch.get("n_bins") if arch.get("head") == "dpm" else None

