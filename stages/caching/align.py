"""Stage one of a teacher that is not metric: each frame's map aligned to a metric reference.

The reference of a frame is its sparse GT (``--gt-root`` with a split) where it has some, else a
metric teacher's map of the same frame (``--align-to STORE/TEACHER/SPLIT``, a group of the same
frames); the fit and its robustness are :mod:`tiekd.pipeline.teachers.align`'s. The store keeps
metric maps, so every method trains from it, and per frame the fit (arrays ``align_scale``,
``align_shift``, ``align_pixels``).
"""

from __future__ import annotations

import numpy as np
import torch

from tiekd.data.registry import get_dataset
from tiekd.pipeline.errors import ConfigError, StoreError
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.teachers.align import OUTLIER_MADS, TRIM_ROUNDS, TRIM_SHARE, aligned_depth, fit_alignment

ALIGN_ARRAYS = {"align_scale": "float64", "align_shift": "float64", "align_pixels": "int32"}
"""Per-frame arrays of an aligned group: the fit's scale and shift, and the pixels it used."""


class References:
    """Metric reference maps (H, W) metres (0 = none) of the frames of a stage-one run."""

    def __init__(self, cfg, frames: list):
        self.cfg = cfg
        self.frames = frames
        self.dataset = get_dataset(cfg.dataset)
        self.metric = _metric_group(cfg, frames) if cfg.align_to else None

    def reference(self, index: int) -> np.ndarray:
        """The frame's GT where it has some, else the metric group's map, else zeros."""
        record = self.frames[index]
        if self.cfg.gt_root is not None and getattr(record, "gt", None) is not None:
            gt = self.dataset.crop_to_cache(self.dataset.read_gt(self.cfg.gt_root, record), self.cfg.crop)
            if (gt > 0).any() or self.metric is None:
                return gt
        if self.metric is not None:
            return self.metric.depth(index)
        return np.zeros(self.cfg.crop, np.float32)

    def describe(self) -> dict:
        """What the group records of its alignment."""
        reference = [("GT under " + str(self.cfg.gt_root)) if self.cfg.gt_root else None, self.cfg.align_to]
        return {
            "teacher_output": self.cfg.teacher_output,
            "space": "inverse depth" if self.cfg.teacher_output == "relative-inverse" else "depth",
            "reference": " else ".join(r for r in reference if r),
            "fit": f"least squares, {TRIM_ROUNDS} rounds leaving out residuals beyond {OUTLIER_MADS:g} robust standard "
            f"deviations and the {TRIM_SHARE:.0%} largest",
        }


def _metric_group(cfg, frames: list) -> TeacherCache:
    """The --align-to group: metric, over the same frames, at the same size."""
    store, _, rest = cfg.align_to.rpartition("/")
    store, _, teacher = store.rpartition("/")
    try:
        cache = TeacherCache.open(store, teacher, rest)
    except StoreError as e:
        raise ConfigError(f"--align-to {cfg.align_to}: {e.message}") from None
    if cache.ids != [f.rgb for f in frames]:
        raise ConfigError(
            f"--align-to {cfg.align_to} holds other frames than this run ({len(cache.ids)} vs {len(frames)}, or "
            "another order); cache the metric teacher over the same split or images first"
        )
    if cache.spec.teacher_output != "metric" or tuple(cache.spec.crop) != tuple(cfg.crop) or not cache.complete:
        raise ConfigError(f"--align-to {cfg.align_to} must be a complete metric group of {cfg.crop[0]}x{cfg.crop[1]} maps")
    return cache


def align_batch(
    cfg, references: References, prediction: torch.Tensor, indices: list[int], ids: list[str]
) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Metric depth (B, 1, H, W) of a relative ``prediction`` batch and its fits by array name."""
    fits = []
    depth = np.empty(prediction.shape, np.float64)
    values = prediction[:, 0].double().cpu().numpy()
    for k, index in enumerate(indices):
        fit = fit_alignment(values[k], references.reference(index), kind=cfg.teacher_output,
                            min_depth=cfg.min_depth, max_depth=cfg.max_depth, what=ids[k])  # fmt: skip
        depth[k, 0] = aligned_depth(values[k], fit, kind=cfg.teacher_output)
        fits.append(fit)
    extras = {
        "align_scale": np.array([f.scale for f in fits]),
        "align_shift": np.array([f.shift for f in fits]),
        "align_pixels": np.array([f.pixels for f in fits], np.int32),
    }
    return torch.from_numpy(depth).to(prediction.device), extras
