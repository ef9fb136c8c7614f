"""Torch datasets over split records.

Errors in a DataLoader worker would reach the main process wrapped in a multi-line traceback, so
a sample carries its problem as text in ``error`` and the stage raises it there as one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tiekd.data.augment import augment
from tiekd.data.kitti import (
    KB_HEIGHT,
    KB_WIDTH,
    Record,
    gt_path,
    kb_crop,
    kb_crop_box,
    read_cropped_rgb,
    read_depth_png,
    read_rgb,
    rgb_path,
)
from tiekd.pipeline.cache import TeacherCache
from tiekd.pipeline.errors import DataError, StoreError
from torch.utils.data import Dataset


class CroppedImages(Dataset):
    """KB-cropped RGB images of some records, for running a teacher.

    Item: ``{"index": frame index, "image": uint8 (3, H, W), "error": "" or a message}``.
    Images stay uint8 until they reach the device: a quarter of the bytes to copy.
    """

    def __init__(
        self,
        records: list[Record],
        data_root: Path,
        indices: list[int],
        *,
        crop: tuple[int, int] = (KB_HEIGHT, KB_WIDTH),
    ):
        self.records = records
        self.data_root = Path(data_root)
        self.indices = indices
        self.crop = crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        index = self.indices[k]
        try:
            image = read_cropped_rgb(self.data_root, self.records[index], crop=self.crop)
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


def read_gt_of(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """GT depth (H, W) metres of an image of ``image_size`` (H, W); DataError when the sizes differ.

    The KB crop is taken from each array's own bottom rows, so a GT of another size would be
    cropped out of line with its image (by as many rows as the heights differ).
    """
    gt = read_depth_png(path)
    if gt.shape != tuple(image_size):
        raise DataError(
            f"GT {path} is {gt.shape[0]}x{gt.shape[1]} but its image is {image_size[0]}x{image_size[1]}; "
            "the split pairs them wrongly or the GT is of another camera"
        )
    return gt


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding it."""
    with Image.open(path) as image:
        return image.height, image.width


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
    for key in ("teacher", "gt"):
        if key in sample:
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
        crop: tuple[int, int] = (KB_HEIGHT, KB_WIDTH),
    ):
        self.records = records
        self.data_root = Path(data_root)
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.scale = scale
        self.cache_ref = cache_ref
        self.gt_root = gt_root
        self.crop = crop
        self._cache = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def cache(self):
        """The teacher cache, opened on first use in each worker process (never before a fork)."""
        if self._cache is None and self.cache_ref is not None:
            self._cache = TeacherCache.open(*self.cache_ref)
        return self._cache

    def _maps(self, record: Record) -> dict[str, np.ndarray]:
        maps = {}
        if self.cache is not None:
            maps["teacher"] = self.cache.depth_of(record.rgb)
        if self.gt_root is not None:
            path = gt_path(self.gt_root, record)
            if path is None:
                maps["gt"] = np.zeros(self.crop, np.float32)
            else:
                size = image_size(rgb_path(self.data_root, record))
                maps["gt"] = kb_crop(read_gt_of(path, size), crop=self.crop)
        return maps

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        record = self.records[index]
        try:
            image = read_cropped_rgb(self.data_root, record, crop=self.crop)
            rng = np.random.default_rng([self.seed, epoch, index])
            image, maps = augment(image, self._maps(record), rng, self.augment_cfg)
            error = ""
        except (DataError, StoreError) as e:
            height, width = self.augment_cfg.crop
            image, error = np.zeros((height, width, 3), np.float32), e.message
            maps = {k: np.zeros((height, width), np.float32) for k in self._wanted()}
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "error": error}
        sample.update({k: _to_tensor_map(v) for k, v in maps.items()})
        return resize_sample(sample, self.scale)

    def _wanted(self) -> list[str]:
        return (["teacher"] if self.cache_ref else []) + (["gt"] if self.gt_root else [])


class EvaluationSamples(Dataset):
    """KB-cropped images with their KB-cropped GT, for the records that have GT.

    Item: ``index`` (into the records), ``image`` uint8 (3, H, W), ``gt`` (H, W) metres,
    ``full_size`` (H, W) of the uncropped image and ``box`` (top, left) of the crop in it, so a
    crop mask defined on the full image (the BTS convention) can be applied; ``error``.
    """

    def __init__(
        self, records: list[Record], data_root: Path, gt_root: Path, *, crop: tuple[int, int] = (KB_HEIGHT, KB_WIDTH)
    ):
        self.records = records
        self.indices = [i for i, r in enumerate(records) if r.gt is not None]
        self.data_root = Path(data_root)
        self.gt_root = Path(gt_root)
        self.crop = crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        index = self.indices[k]
        record = self.records[index]
        try:
            rgb = read_rgb(rgb_path(self.data_root, record))
            gt = read_gt_of(gt_path(self.gt_root, record), rgb.shape[:2])
            box = kb_crop_box(*rgb.shape[:2], crop=self.crop)
            image, gt, error = kb_crop(rgb, crop=self.crop), kb_crop(gt, crop=self.crop), ""
            full_size = rgb.shape[:2]
        except DataError as e:
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
