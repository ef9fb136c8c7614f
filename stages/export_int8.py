"""``tiekd export --int8``: the frames that calibrate the INT8 model and the ones that measure it.

Frames come from the user's split (``--split``, ``--data-root``, optional ``--gt-root``): up to
``--calibration-frames`` N frames spread over the split calibrate, and up to N others, between
them, measure. Each frame is the dataset's cache crop (KITTI: the 352x1216 KB crop) resized to the
exported input, as evaluation runs a student; depth goes back to the cache crop and is scored under
the dataset's protocol (evaluation crop, depth range), without flip TTA (a deployed model runs once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tiekd.pipeline.deploy.quantize import int8_change
from tiekd.pipeline.errors import ConfigError, OutputError
from tiekd.pipeline.files import os_reason


@dataclass
class Frames:
    """Calibration inputs, and the measured frames' inputs and GT (None without), by record id."""

    calibration: list[np.ndarray] = field(default_factory=list)
    calibration_ids: list[str] = field(default_factory=list)
    measured: list[np.ndarray] = field(default_factory=list)
    measured_ids: list[str] = field(default_factory=list)
    gts: list[np.ndarray | None] = field(default_factory=list)


def model_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) cache crop -> float32 (1, 3, *size) RGB in [0, 1], resized as evaluation does."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float() / 255
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.numpy()


def read_frames(cfg, dataset, size: tuple[int, int]) -> Frames:
    """The calibration and measurement frames of ``cfg.split`` (see the module docstring)."""
    if cfg.split is None or cfg.data_root is None:
        raise ConfigError("--int8 calibrates on real frames: pass --split and --data-root (and --gt-root to score GT)")
    records = dataset.read_split(cfg.split)
    data_root = dataset.check_root(cfg.data_root, flag="--data-root")
    gt_root = None if cfg.gt_root is None else dataset.check_root(cfg.gt_root, flag="--gt-root")
    step = max(1, len(records) // (2 * cfg.calibration_frames))
    picked = records[::step][: 2 * cfg.calibration_frames]
    calibration, measured = picked[0::2], picked[1::2] or picked  # one record: measured on itself
    frames = Frames()
    for record in calibration:
        frames.calibration.append(model_input(dataset.read_cropped_image(data_root, record), size))
        frames.calibration_ids.append(record.rgb)
    for record in measured:
        image = dataset.read_full_image(data_root, record)
        gt = None if gt_root is None else dataset.read_aligned_gt(gt_root, record, image.shape[:2])
        frames.measured.append(model_input(dataset.crop_image_to_cache(image, record), size))
        frames.measured_ids.append(record.rgb)
        frames.gts.append(None if gt is None else dataset.crop_to_cache(gt))
    return frames


def measure(run_float, run_int8, frames: Frames, dataset) -> dict[str, dict[str, float]]:
    """Metrics of the INT8 model against the float one (and both against GT) on the measured frames.

    ``run_float`` / ``run_int8``: input (1, 3, h, w) -> depth (1, 1, h, w) metres (NumPy)."""
    crop = dataset.cache_crop
    float_depths, int8_depths = [], []
    for x in frames.measured:
        for run, depths in ((run_float, float_depths), (run_int8, int8_depths)):
            depth = torch.from_numpy(np.asarray(run(x), dtype=np.float32))
            depths.append(F.interpolate(depth, size=crop, mode="bilinear", align_corners=False)[0, 0].numpy())
    mask = dataset.eval_mask(dataset.eval_crop, *crop)
    return int8_change(
        float_depths, int8_depths, frames.gts, mask=mask, min_depth=dataset.min_depth, max_depth=dataset.max_depth
    )


def report_lines(change: dict, frames: Frames, split: Path, dataset) -> list[str]:
    """What the INT8 model costs, one line per comparison."""
    other = "other " if frames.measured_ids != frames.calibration_ids else ""
    protocol = f"{dataset.eval_crop} crop, depth in [{dataset.min_depth}, {dataset.max_depth}] m, no flip TTA"
    where = f"{len(frames.measured)} {other}frames ({dataset.cache_crop_name}, {protocol})"
    lines = [f"int8: calibrated on {len(frames.calibration)} frames of {split}; measured on {where}"]
    for name, metrics in change.items():
        values = ", ".join(f"{metric} {value:.4f}" for metric, value in metrics.items())
        lines.append(f"int8: {name}: {values}")
    return lines


def write_report(path: Path, change: dict, frames: Frames, extra: dict) -> None:
    """The measured change as JSON beside the model."""
    report = {
        "metrics": change,
        "calibration_frames": frames.calibration_ids,
        "measured_frames": frames.measured_ids,
        **extra,
    }
    try:
        path.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as e:
        raise OutputError(f"{path} cannot be written ({os_reason(e)})") from e
