"""What tiekd needs to know about a dataset, in one small object per dataset.

Stages never import a dataset's constants; they take a :class:`DatasetDescription` (chosen with
``--dataset``, see :mod:`tiekd.data.registry`) and ask it for sizes, crops, depth range, bins and
readers. Adding a dataset means writing its readers and one description, and adding it to
``DATASETS``; a lab describes its own in a YAML file instead (``--dataset PATH.yaml``,
:mod:`tiekd.data.own`).

Geometry, in the order the pipeline applies it to an image of H x W pixels:

1. the *cache crop*: the region teachers run on and the teacher store holds maps for
   (KITTI: the 352x1216 KB crop; NYU: the whole 480x640 image). Images, GT and teacher maps are
   all aligned with it;
2. the *train region*: a fixed box inside the cache crop that training samples are cut from,
   before augmentation (KITTI: all of it; NYU: the border crop that drops the white frame);
3. the random *training crop* of the augmentation (KITTI 352x704, NYU 416x544);
4. the *evaluation crops*: masks on the cache crop (or on the full image) where GT is scored.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiekd.pipeline.errors import ConfigError, DataError

NO_CROP = "none"
"""Evaluation crop name that scores every pixel; every dataset has it."""


@dataclass(frozen=True)
class CropBox:
    """Rows [top, bottom) and columns [left, right) of an evaluation crop.

    ``relative``: the bounds are fractions of the map's height and width, taken as
    ``int(fraction * size)`` (the Garg and Eigen crops of KITTI as BTS writes them); otherwise
    they are pixels of the full-size image (NYU's Eigen crop).
    """

    top: float
    bottom: float
    left: float
    right: float
    relative: bool

    def mask(self, height: int, width: int) -> np.ndarray:
        """Boolean (height, width) mask, True inside the crop."""
        scale_rows, scale_cols = (height, width) if self.relative else (1, 1)
        top, bottom = int(self.top * scale_rows), int(self.bottom * scale_rows)
        left, right = int(self.left * scale_cols), int(self.right * scale_cols)
        mask = np.zeros((height, width), dtype=bool)
        mask[top:bottom, left:right] = True
        return mask


@dataclass(frozen=True)
class DatasetDescription:
    """One dataset: sizes, crops, depth range, training presets and readers.

    Readers are plain module-level functions (so DataLoader workers can pickle the description):
    ``read_split(path) -> [Record]``, ``check_root(root, flag) -> Path``,
    ``check_image(data_root, record)`` and ``check_gt(gt_root, record)`` (raise DataError when
    missing), ``read_image(data_root, record) -> uint8 (H, W, 3)`` of the full image and
    ``read_gt(gt_root, record) -> float32 (H, W) metres, 0 = none`` (None for a record without GT).
    """

    name: str
    """The --dataset value."""
    title: str
    """Human-readable name for messages and reports."""
    cache_crop: tuple[int, int]
    """(H, W) of the region teachers run on; teacher maps are stored at this size."""
    cache_crop_name: str
    """What the cache crop is called, e.g. "KB crop" or "full image"."""
    gt_name: str
    """What measured the ground truth, e.g. "LiDAR" or "Kinect", for figure titles."""
    cache_box: Callable[..., tuple[int, int]]
    """``(height, width, *, crop=(h, w)) -> (top, left)`` of a crop of that size in an image of
    height x width; DataError if the image is too small."""
    train_region: tuple[int, int, int, int] | None
    """(top, bottom, left, right) inside the cache crop that training samples come from; None = all."""
    train_crop: tuple[int, int]
    """Random training crop (H, W), the --crop default."""
    random_top: bool
    """Whether the training crop's vertical offset is random (NYU) or 0 (KITTI)."""
    loss_top_row: int
    """First row of the training crop the TIE-KD loss sees (KITTI leaves out the sky); --loss-top-row."""
    min_depth: float
    """Smallest depth in metres (bins, clamping, valid GT)."""
    max_depth: float
    """Largest depth in metres (bins, clamping, valid GT); --max-depth."""
    n_bins: int
    """Depth bins of the DPM; --n-bins."""
    sigma: float
    """Std in metres of the paper-form teacher DPM, the --sigma default of that form (the code form
    keeps the released code's own value, see :func:`tiekd.pipeline.dpm.dpm_sigma`)."""
    gt_scale: float
    """Value per metre of the GT as its files store it (KITTI's 16-bit PNGs 256, NYU 1000); the packed
    store keeps the GT in these values, so it packs exactly."""
    brightness_range: tuple[float, float]
    """(low, high) of the training augmentation's uniform brightness factor (gamma and colour
    factors are U(0.9, 1.1) on every dataset)."""
    eval_crops: Mapping[str, CropBox]
    """Evaluation crops by --crop name (``none`` is always there too)."""
    eval_crop: str
    """The protocol's evaluation crop, the --crop default."""
    read_split: Callable
    check_root: Callable
    check_image: Callable
    check_gt: Callable
    read_image: Callable
    read_gt: Callable
    image_size: tuple[int, int] | None = None
    """(H, W) every image must have; None where sizes vary (KITTI: by recording date)."""
    sample_module: str | None = None
    """Module of the procedural sample (``sample_paths(out)``, ``write_sample_dataset(out, ...)``),
    imported on use: the sample generators import the readers, not the other way round."""
    gt_file: Callable | None = None
    """``(gt_root, record) -> Path`` of a record's GT file where it is not ``gt_root / record.gt``
    (KITTI: merged or in the download's train/ and val/ folders)."""
    source: str | None = None
    """The description file a lab's own dataset was read from (:mod:`tiekd.data.own`); None if built in."""

    @property
    def cache_crop_title(self) -> str:
        """E.g. "352x1216 KB crop", for messages."""
        return f"{self.cache_crop[0]}x{self.cache_crop[1]} {self.cache_crop_name}"

    @property
    def train_region_title(self) -> str:
        """E.g. "352x1216 KB crop" or "427x565 training region", for messages."""
        if self.train_region is None:
            return self.cache_crop_title
        return f"{self.train_size[0]}x{self.train_size[1]} training region"

    @property
    def train_size(self) -> tuple[int, int]:
        """(H, W) of the train region: the largest training crop possible."""
        if self.train_region is None:
            return self.cache_crop
        top, bottom, left, right = self.train_region
        return bottom - top, right - left

    @property
    def depth_bins(self) -> dict:
        """The DPM bins as keyword arguments (``build_student(encoder, **dataset.depth_bins)``):
        ``n_bins``, ``min_depth`` and ``max_depth``."""
        return {"n_bins": self.n_bins, "min_depth": self.min_depth, "max_depth": self.max_depth}

    def presets(self) -> dict:
        """Option defaults that follow the dataset, by config field name (each stage's --crop means
        another crop, so stages set that one themselves)."""
        return {
            "loss_top_row": self.loss_top_row,
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "n_bins": self.n_bins,
        }

    def cache_crop_box(self, size: tuple[int, int], crop: tuple[int, int] | None = None) -> tuple[int, int]:
        """(top, left) of the cache crop (or of a crop of another size, placed alike) in an image of ``size``."""
        return self.cache_box(size[0], size[1], crop=crop or self.cache_crop)

    def crop_to_cache(self, array: np.ndarray, crop: tuple[int, int] | None = None) -> np.ndarray:
        """The cache crop (or a crop of size ``crop`` placed alike) of a full-size (H, W[, C]) array."""
        crop = crop or self.cache_crop
        top, left = self.cache_crop_box(array.shape[:2], crop)
        return array[top : top + crop[0], left : left + crop[1]]

    def _sample(self):
        if self.sample_module is None:
            raise ConfigError(f"--dataset {self.name} has no procedural sample; use --dataset kitti or nyu")
        return importlib.import_module(self.sample_module)

    def sample_paths(self, out: Path):
        """Where the procedural sample lives under ``out`` (a SampleDataset; nothing is written)."""
        return self._sample().sample_paths(out)

    def write_sample(self, out: Path, *, n_train: int, n_test: int, seed: int, n_unlabelled: int = 0):
        """Write the procedural sample under ``out`` (and ``n_unlabelled`` images without GT); returns
        its SampleDataset."""
        module = self._sample()
        return module.write_sample_dataset(out, n_train=n_train, n_test=n_test, seed=seed, n_unlabelled=n_unlabelled)

    def gt_path(self, gt_root: Path, record) -> Path | None:
        """The file a record's GT is read from; None for a record without GT."""
        if record.gt is None:
            return None
        return self.gt_file(gt_root, record) if self.gt_file is not None else gt_root / record.gt

    def crop_to_train_region(self, array: np.ndarray) -> np.ndarray:
        """The train region of an array aligned with the cache crop."""
        if self.train_region is None:
            return array
        top, bottom, left, right = self.train_region
        return array[top:bottom, left:right]

    def read_full_image(self, data_root: Path, record) -> np.ndarray:
        """A record's whole image, uint8 (H, W, 3), refused when not the dataset's fixed size."""
        image = self.read_image(data_root, record)
        self.check_size(image.shape[:2], what=f"image {record.rgb}")
        return image

    def crop_image_to_cache(self, image: np.ndarray, record, crop: tuple[int, int] | None = None) -> np.ndarray:
        """The cache crop (or ``crop``) of a record's whole image; errors name the image."""
        try:
            return self.crop_to_cache(image, crop)
        except DataError as e:
            raise DataError(f"image {record.rgb}: {e.message}") from None

    def read_cropped_image(self, data_root: Path, record, crop: tuple[int, int] | None = None) -> np.ndarray:
        """The cache crop (or ``crop``) of a record's image, uint8 (h, w, 3); errors name the image."""
        return self.crop_image_to_cache(self.read_full_image(data_root, record), record, crop)

    def read_aligned_gt(self, gt_root: Path, record, image_size: tuple[int, int]) -> np.ndarray | None:
        """A record's whole GT, float32 (H, W) metres (None without GT), refused when its size is not
        its image's: crops are placed by each array's own size, so they would fall out of line."""
        gt = self.read_gt(gt_root, record)
        if gt is not None and gt.shape != tuple(image_size):
            raise DataError(
                f"GT {record.gt} is {gt.shape[0]}x{gt.shape[1]} but its image is {image_size[0]}x{image_size[1]}; "
                "the split pairs them wrongly or the GT is of another camera"
            )
        return gt

    def check_size(self, size: tuple[int, int], *, what: str) -> None:
        """Refuse an image or map that is not the dataset's fixed size (where it has one)."""
        if self.image_size is not None and tuple(size) != tuple(self.image_size):
            raise DataError(
                f"{what} is {size[0]}x{size[1]}, but {self.title} images are "
                f"{self.image_size[0]}x{self.image_size[1]}; check --data-root / --gt-root and --dataset"
            )

    def eval_mask(self, crop: str, height: int, width: int) -> np.ndarray:
        """Boolean (height, width) mask of evaluation crop ``crop`` (``none``: everything)."""
        self.check_eval_crop(crop)
        if crop == NO_CROP:
            return np.ones((height, width), dtype=bool)
        return self.eval_crops[crop].mask(height, width)

    def check_eval_crop(self, crop: str) -> None:
        """Refuse a --crop this dataset does not define."""
        names = (*self.eval_crops, NO_CROP)
        if crop not in names:
            raise ConfigError(f"--crop {crop} is not an evaluation crop of {self.title}; use one of {', '.join(names)}")


def fill_presets(cfg, description: DatasetDescription) -> None:
    """Set every preset field of a config dataclass that is None to the dataset's value."""
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in description.presets().items():
        if key in names and getattr(cfg, key) is None:
            setattr(cfg, key, value)
