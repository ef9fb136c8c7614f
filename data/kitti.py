"""KITTI (Eigen split): paths, crops, readers and its dataset description.

Split files hold ``RGB_REL GT_REL|None FOCAL`` a line (:mod:`tiekd.data.records`); RGB paths are
relative to the KITTI raw root, GT paths to the annotated-depth root, merged or as downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tiekd.data import images, records
from tiekd.data.description import CropBox, DatasetDescription
from tiekd.data.records import Record, check_root
from tiekd.pipeline.errors import DataError

# The "KB crop" of the KITTI depth benchmark (Uhrig et al. 2017), used by BTS, AdaBins and TIE-KD:
# the bottom 352 rows and the central 1216 columns of every image, whatever its size.
KB_HEIGHT = 352
KB_WIDTH = 1216

# The TIE-KD loss starts at this row of the 352-row KB crop: LiDAR never reaches the sky above it
# (the authors' KITTI setting; a dataset setting, not a test of the image width).
KITTI_LOSS_TOP_ROW = 110

# The authors' KITTI settings (method.md sections 2, 3, 6, 8): depth range in metres, DPM bins,
# paper-form DPM sigma in metres, and the random training crop taken from the KB crop.
MIN_DEPTH = 1e-3
MAX_DEPTH = 80.0
N_BINS = 257
SIGMA = 0.8
TRAIN_CROP = (352, 704)

# Range of the brightness factor of the colour augmentation (the authors' kitti_kd_with_b8_*.py l.16,
# BTS bts_dataloader.py l.222-225).
BRIGHTNESS_RANGE = (0.9, 1.1)

# KITTI depth PNGs are uint16 with depth = value / 256 metres and 0 = no measurement
# (devkit of the KITTI depth benchmark, readme.txt).
GT_SCALE = 256.0

# Image size (height, width) of the left colour camera per recording date.
IMAGE_SIZES = {
    "2011_09_26": (375, 1242),
    "2011_09_28": (370, 1224),
    "2011_09_29": (374, 1238),
    "2011_09_30": (370, 1226),
    "2011_10_03": (376, 1241),
}

# The annotated depth maps are downloaded as train/ and val/ folders; users may also merge them.
GT_SUBFOLDERS = ("", "train", "val")

# Evaluation crops as fractions (top, bottom, left, right) of the map's height and width; row and
# column bounds are int(fraction * size), bottom and right exclusive. Garg et al. 2016
# ("Unsupervised CNN for single view depth estimation") and Eigen et al. 2014, with the fractions
# written as in the BTS (bts_eval.py) and AdaBins (evaluate.py) evaluation scripts.
GARG_CROP = CropBox(0.40810811, 0.99189189, 0.03594771, 0.96405229, relative=True)
EIGEN_CROP = CropBox(0.3324324, 0.91351351, 0.0359477, 0.96405229, relative=True)


def read_split(path: str | Path) -> list[Record]:
    """All records of a KITTI split file, in order (paths relative to the roots, no leading "/")."""
    return records.read_split(path, rooted=False)


def read_depth(path: Path) -> np.ndarray:
    """A KITTI depth PNG as float32 (H, W) metres (value / 256; 0 = no measurement)."""
    return images.read_depth_png(path, scale=GT_SCALE)


def write_depth(path: Path, depth: np.ndarray) -> None:
    """Write float metres as a KITTI depth PNG (uint16 value = round(depth * 256), 0 = none)."""
    images.write_depth_png(path, depth, scale=GT_SCALE)


def rgb_path(data_root: Path, record: Record) -> Path:
    """Path of the record's RGB image under the KITTI raw root."""
    return data_root / record.rgb


def gt_path(gt_root: Path, record: Record) -> Path | None:
    """Path of the record's GT depth, merged or as downloaded (``train/``, ``val/``).

    Returns None for records without GT. Raises DataError if the split names a GT file that is
    in none of the accepted places.
    """
    if record.gt is None:
        return None
    for sub in GT_SUBFOLDERS:
        candidate = gt_root / sub / record.gt
        if candidate.is_file():
            return candidate
    raise DataError(
        f"ground truth {record.gt} (split line {record.line}) is not under --gt-root {gt_root} "
        "(looked in it and in its train/ and val/ folders)"
    )


def kb_crop_box(height: int, width: int, *, crop: tuple[int, int] = (KB_HEIGHT, KB_WIDTH)) -> tuple[int, int]:
    """Top-left corner (top, left) of the KB crop of an image of this size.

    The crop keeps the bottom rows (the top of KITTI images is sky without LiDAR) and the central
    columns: top = H - crop_h, left = (W - crop_w) // 2.
    """
    crop_h, crop_w = crop
    if height < crop_h or width < crop_w:
        raise DataError(f"image of {height}x{width} is smaller than the {crop_h}x{crop_w} crop")
    return height - crop_h, (width - crop_w) // 2


def kb_crop(array: np.ndarray, *, crop: tuple[int, int] = (KB_HEIGHT, KB_WIDTH)) -> np.ndarray:
    """The KB crop of an HxW or HxWxC array."""
    top, left = kb_crop_box(array.shape[0], array.shape[1], crop=crop)
    return array[top : top + crop[0], left : left + crop[1]]


def check_image(data_root: Path, record: Record) -> None:
    """Refuse a record whose RGB image is not under the root."""
    if not rgb_path(data_root, record).is_file():
        raise DataError(f"image {record.rgb} (split line {record.line}) is not under --data-root {data_root}")


def check_gt(gt_root: Path, record: Record) -> None:
    """Refuse a record whose GT file is in none of the accepted places."""
    gt_path(gt_root, record)


def read_image(data_root: Path, record: Record) -> np.ndarray:
    """A record's full RGB image, uint8 HxWx3."""
    return images.read_rgb(rgb_path(data_root, record))


def read_gt(gt_root: Path, record: Record) -> np.ndarray | None:
    """A record's full-size GT depth, float32 HxW metres (0 = none); None where the split has none."""
    path = gt_path(gt_root, record)
    return None if path is None else read_depth(path)


KITTI = DatasetDescription(
    name="kitti",
    title="KITTI",
    cache_crop=(KB_HEIGHT, KB_WIDTH),
    cache_crop_name="KB crop",
    gt_name="LiDAR",
    cache_box=kb_crop_box,
    train_region=None,
    train_crop=TRAIN_CROP,
    random_top=False,
    loss_top_row=KITTI_LOSS_TOP_ROW,
    min_depth=MIN_DEPTH,
    max_depth=MAX_DEPTH,
    n_bins=N_BINS,
    sigma=SIGMA,
    gt_scale=GT_SCALE,
    brightness_range=BRIGHTNESS_RANGE,
    eval_crops={"garg": GARG_CROP, "eigen": EIGEN_CROP},
    eval_crop="garg",
    read_split=read_split,
    check_root=check_root,
    check_image=check_image,
    check_gt=check_gt,
    read_image=read_image,
    read_gt=read_gt,
    gt_file=gt_path,
    sample_module="tiekd.data.sample.kitti",
)
"""KITTI with the Eigen split, as the authors train and evaluate on it."""
