"""Torch datasets over split records.

Errors in a DataLoader worker would reach the main process wrapped in a multi-line traceback, so
a sample carries its problem as text in ``error`` and the stage raises it there as one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tiekd.data.augment import augment
from tiekd.data.description import DatasetDescription
from tiekd.data.records import Record
from tiekd.pipeline.errors import DataError, StoreError
from tiekd.pipeline.store.cache import TeacherCache


class CroppedImages(Dataset):
    """Cache-cropped RGB images of some records (KITTI: the KB crop), for running a teacher.

    Item: ``{"index": frame index, "image": uint8 (3, H, W), "error": "" or a message}``.
    Images stay uint8 until they reach the device: a quarter of the bytes to copy.
    """

    def __init__(
        self,
        records: list[Record],
        data_root: Path,
        indices: list[int],
        *,
        dataset: DatasetDescription,
        crop: tuple[int, int] | None = None,
    ):
        self.records = records
        self.data_root = Path(data_root)
        self.indices = indices
        self.dataset = dataset
        self.crop = tuple(crop or dataset.cache_crop)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        index = self.indices[k]
        try:
            image = self.dataset.read_cropped_image(self.data_root, self.records[index], self.crop)
            error = ""
        except DataError as e:
            image, error = np.zeros((*self.crop, 3), np.uint8), e.message
        return {
            "index": index,
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "error": error,
        }


def raise_batch_errors(batch: dict) -> None:
    """Raise the first problem a batch carries as a one-line DataError."""
    for error in batch["error"]:
        if error:
            raise DataError(error)


def _to_tensor_map(depth: np.ndarray) -> torch.Tensor:
    """float32 HxW -> (1, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None]


def resize_sample(sample: dict, scale: float) -> dict:
    """Scale image (bilinear, antialiased) and depth maps (nearest: no invented depth) by ``scale``."""
    if scale == 1.0:
        return sample
    height, width = sample["image"].shape[-2:]
    size = (round(height * scale), round(width * scale))
    out = dict(sample)
    out["image"] = torch.nn.functional.interpolate(
        sample["image"][None], size=size, mode="bilinear", antialias=True, align_corners=False
    )[0].clamp_(0, 1)
    for key in sample:
        if key.startswith("teacher") or key == "gt":  # every teacher of a mixture, and the GT
            out[key] = torch.nn.functional.interpolate(sample[key][None], size=size, mode="nearest")[0]
    return out


class DistillationSamples(Dataset):
    """Training samples: an augmented image with its teacher map and/or GT, all aligned.

    Indexed by ``(epoch, frame)``: the augmentation draws from a generator seeded with
    ``(seed, epoch, frame)``, so a sample is the same whatever the worker that makes it and after
    a resume. Item: ``image`` (3, h, w) float in [0, 1]; ``teacher`` and ``gt`` (1, h, w) metres
    with 0 = none, where asked for; ``error``.
    """

    def __init__(
        self,
        records: list[Record],
        data_root: Path,
        *,
        augment_cfg,
        seed: int,
        scale: float = 1.0,
        cache_ref: tuple[str, str, str] | None = None,
        gt_root: Path | None = None,
        dataset: DatasetDescription,
        packed=None,
        more_teachers: tuple[tuple[str, str, str], ...] = (),
    ):
        self.records = records
        self.data_root = None if data_root is None else Path(data_root)
        self.packed = packed
        """A :class:`~tiekd.data.packed.PackedSource` read instead of the roots (GT where it says), or None."""
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.scale = scale
        self.cache_ref = cache_ref
        self.gt_root = gt_root
        self.dataset = dataset
        self._cache = None
        self.more_teachers = more_teachers
        """Groups of more teachers of the same frames, read as ``teacher_1``, ``teacher_2``, ... (a mixture)."""
        self._more: list[TeacherCache] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def teacher_maps(self, sample_id: str) -> dict[str, np.ndarray]:
        """The teacher maps of a sample: ``teacher`` and those of ``more_teachers`` (none without a cache)."""
        if self.cache is None:
            return {}
        if self._more is None:
            self._more = [TeacherCache.open(*ref) for ref in self.more_teachers]
        maps = {"teacher": self.cache.depth_of(sample_id)}
        maps.update({f"teacher_{k}": c.depth_of(sample_id) for k, c in enumerate(self._more, start=1)})
        return maps

    @property
    def cache(self):
        """The teacher cache, opened on first use in each worker process (never before a fork)."""
        if self._cache is None and self.cache_ref is not None:
            self._cache = TeacherCache.open(*self.cache_ref)
        return self._cache

    def _region(self, record: Record) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Image uint8 (h, w, 3) and teacher map and/or GT float32 (h, w) metres of a record, cut to
        the dataset's train region (inside the cache crop), before augmentation."""
        image, gt = self._cache_crops(record)
        maps = self.teacher_maps(record.rgb)
        if gt is not None:
            maps["gt"] = gt
        crop = self.dataset.crop_to_train_region
        return crop(image), {k: crop(v) for k, v in maps.items()}

    def _cache_crops(self, record: Record) -> tuple[np.ndarray, np.ndarray | None]:
        """Image uint8 (H, W, 3) and GT float32 (H, W) metres (0 = none; None when not wanted) at the cache crop."""
        if self.packed is not None:
            return self.packed.training_region(record)
        dataset, gt = self.dataset, None
        full = dataset.read_full_image(self.data_root, record)
        if self.gt_root is not None:
            gt = dataset.read_aligned_gt(self.gt_root, record, full.shape[:2])
            gt = np.zeros(dataset.cache_crop, np.float32) if gt is None else dataset.crop_to_cache(gt)
        return dataset.crop_image_to_cache(full, record), gt

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        record = self.records[index]
        try:
            image, maps = self._region(record)
            rng = np.random.default_rng([self.seed, epoch, index])
            image, maps = augment(image, maps, rng, self.augment_cfg)
            error = ""
        except (DataError, StoreError) as e:
            height, width = self.augment_cfg.crop
            image, error = np.zeros((height, width, 3), np.float32), e.message
            maps = {k: np.zeros((height, width), np.float32) for k in self._wanted()}
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "error": error}
        sample.update({k: _to_tensor_map(v) for k, v in maps.items()})
        return resize_sample(sample, self.scale)

    def _wanted(self) -> list[str]:
        with_gt = self.packed.with_gt if self.packed is not None else self.gt_root is not None
        teachers = [f"teacher_{k}" for k in range(1, len(self.more_teachers) + 1)]
        return (["teacher", *teachers] if self.cache_ref else []) + (["gt"] if with_gt else [])


class EvaluationSamples(Dataset):
    """Cache-cropped images with their cache-cropped GT (KITTI: KB crop), for the records that have GT.

    Item: ``index`` (into the records), ``image`` uint8 (3, H, W), ``gt`` (H, W) metres,
    ``full_size`` (H, W) of the uncropped image and ``box`` (top, left) of the crop in it, so a
    crop mask defined on the full image (the BTS convention) can be applied; ``error``.
    """

    def __init__(self, records: list[Record], data_root: Path | None, gt_root: Path | None, *,
                 dataset: DatasetDescription, packed=None):  # fmt: skip
        self.records = records
        self.indices = [i for i, r in enumerate(records) if r.gt is not None]
        self.data_root = None if data_root is None else Path(data_root)
        self.gt_root = None if gt_root is None else Path(gt_root)
        self.packed = packed
        """A :class:`~tiekd.data.packed.PackedSource` read instead of the roots, or None."""
        self.dataset = dataset
        self.crop = dataset.cache_crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        index = self.indices[k]
        record = self.records[index]
        try:
            image, gt, full_size, box = self._frame(record)
            error = ""
        except (DataError, StoreError) as e:
            image, gt = np.zeros((*self.crop, 3), np.uint8), np.zeros(self.crop, np.float32)
            box, full_size, error = (0, 0), self.crop, f"{record.rgb}: {e.message}"
        return {
            "index": index,
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "gt": torch.from_numpy(np.ascontiguousarray(gt)),
            "full_size": torch.tensor(full_size),
            "box": torch.tensor(box),
            "error": error,
        }

    def _frame(self, record: Record) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image and GT at the cache crop, the full image's size and the crop's (top, left)."""
        if self.packed is not None:
            return self.packed.evaluation(record)
        rgb = self.dataset.read_full_image(self.data_root, record)
        gt = self.dataset.read_aligned_gt(self.gt_root, record, rgb.shape[:2])
        box = self.dataset.cache_crop_box(rgb.shape[:2])
        return self.dataset.crop_to_cache(rgb), self.dataset.crop_to_cache(gt), rgb.shape[:2], box
