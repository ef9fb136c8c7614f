"""NYU Depth v2 in the layouts users hold, and its dataset description (method.md sections 2, 3, 6).

- BTS layout, training: ``sync/<scene>/rgb_XXXXX.jpg`` (480x640 JPEG) with
  ``sync_depth_XXXXX.png`` (uint16 millimetres, 0 = no measurement) and the BTS split
  ``nyudepthv2_train_files_with_gt.txt`` whose paths start with "/" but are relative to the
  data root all the same (BTS joins them by concatenation)::

      /kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579

- The extracted official test set: ``official_splits/test/<scene>/rgb_XXXXX.jpg`` and
  ``sync_depth_XXXXX.png``, with the 654-line test split (paths without the slash), XXXXX the
  0-based frame of the labeled file.
- The labeled file ``nyu_depth_v2_labeled.mat`` itself: --data-root / --gt-root may name it
  instead of a folder; a split line's number then selects the frame, read as BTS extracts it
  (raw depth truncated to millimetres, black border; :mod:`tiekd.data.nyu_mat`).

Teachers see the whole 480x640 image and the store holds 480x640 maps aligned with it; training
samples come from the border crop [45:472, 43:608] (no white frame) and a random 416x544 crop
with a random vertical offset (BTS on NYU); the evaluation crop is Eigen's rows 45:471,
cols 41:601 of the 480x640 map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tiekd.data import images, nyu_mat, records
from tiekd.data.description import CropBox, DatasetDescription
from tiekd.data.records import Record
from tiekd.pipeline.errors import DataError

IMAGE_SIZE = (480, 640)
"""(H, W) of every NYU Depth v2 image and depth map."""
BORDER_CROP = (45, 472, 43, 608)
"""(top, bottom, left, right) of the training region: BTS's NYU crop without the white frame."""
TRAIN_CROP = (416, 544)
"""Random training crop (H, W) of BTS and AdaBins on NYU."""
EIGEN_CROP = CropBox(45, 471, 41, 601, relative=False)
"""Evaluation crop of Eigen et al. 2014 in pixels of the 480x640 map (BTS bts_eval.py)."""
MIN_DEPTH = 1e-3
MAX_DEPTH = 10.0
"""Depth range in metres (the authors' NYU configs)."""
N_BINS = 49
SIGMA = 0.15
"""DPM bins and paper-form sigma in metres of the authors' NYU configs (method.md sections 2, 3)."""
BRIGHTNESS_RANGE = (0.75, 1.25)
"""Range of the brightness factor of the colour augmentation: wider than KITTI's (the authors'
nyu_kd_with_b8_*.py l.16, BTS bts_dataloader.py l.222-225 for --dataset nyu)."""
LOSS_TOP_ROW = 0
"""The TIE-KD loss sees the whole crop: indoors, the depth sensor covers every row."""
GT_SCALE = 1000.0
"""sync_depth PNGs hold millimetres: depth = value / 1000 m."""
EXTRACTED_REGION = (7, 474, 7, 632)
"""(top, bottom, left, right) of the labeled file's images that BTS's extraction keeps; the rest is
black (cleinc/bts utils/extract_official_train_test_set_from_mat.py l.61-62). Reads of the .mat
apply the same border."""
METRES_SUSPECT_BELOW = 20
"""A GT PNG whose values are all below this (and not all 0) holds metres, not millimetres."""


def read_split(path: str | Path) -> list[Record]:
    """A BTS NYU split: ``RGB GT FOCAL`` a line, paths relative to the root with or without one
    leading "/"; paths that climb out of the root are refused."""
    return records.read_split(path, rooted=True)


def check_root(root: str | Path, *, flag: str) -> Path:
    """A folder of the BTS layout, or the labeled .mat file (MATLAB v7.3)."""
    root = Path(root)
    if root.is_file():
        return nyu_mat.check_labeled_file(root, flag=flag)
    return records.check_root(root, flag=flag)


def _check_file(root: Path, relative: str, *, line: int, what: str, flag: str) -> None:
    """Refuse a split path that is not a file under the folder, or a frame beyond the labeled file."""
    if nyu_mat.is_labeled_file(root):
        nyu_mat.frame_index(root, relative, line=line)
    elif not (root / relative).is_file():
        raise DataError(f"{what} {relative} (split line {line}) is not under {flag} {root}")


def check_image(data_root: Path, record: Record) -> None:
    """Refuse a record whose image is missing (folder) or beyond the labeled file."""
    _check_file(data_root, record.rgb, line=record.line, what="image", flag="--data-root")


def check_gt(gt_root: Path, record: Record) -> None:
    """Refuse a record whose GT is missing (folder) or beyond the labeled file."""
    if record.gt is not None:
        _check_file(gt_root, record.gt, line=record.line, what="ground truth", flag="--gt-root")


def read_image(data_root: Path, record: Record) -> np.ndarray:
    """A record's image, uint8 (480, 640, 3), from the folder's JPEG or the labeled file."""
    if nyu_mat.is_labeled_file(data_root):
        return nyu_mat.read_labeled_image(data_root, record.rgb, line=record.line, kept=EXTRACTED_REGION)
    return images.read_rgb(data_root / record.rgb)


def read_depth_mm_png(path: Path) -> np.ndarray:
    """A sync_depth PNG (uint16 millimetres) as float32 (H, W) metres; refuses one holding metres."""
    raw = images.read_depth_png(path, scale=1.0)
    largest = float(raw.max())
    if 0 < largest < METRES_SUSPECT_BELOW:
        raise DataError(
            f"GT {path} holds values up to {largest:g} only: metres, not the millimetres of NYU's sync_depth "
            "PNGs; re-save the depth as uint16 millimetres (value = depth_m * 1000)"
        )
    return raw / np.float32(GT_SCALE)


def read_gt(gt_root: Path, record: Record) -> np.ndarray | None:
    """A record's GT depth, float32 (480, 640) metres (0 = none); None where the split has none."""
    if record.gt is None:
        return None
    if nyu_mat.is_labeled_file(gt_root):
        return nyu_mat.read_labeled_depth(gt_root, record.gt, line=record.line, scale=GT_SCALE)
    return read_depth_mm_png(gt_root / record.gt)


def whole_image_box(height: int, width: int, *, crop: tuple[int, int] = IMAGE_SIZE) -> tuple[int, int]:
    """Top-left corner of the cache crop: (0, 0), teachers see the whole image (a smaller
    ``crop`` is centred, as for a teacher that takes less)."""
    if height < crop[0] or width < crop[1]:
        raise DataError(f"image of {height}x{width} is smaller than the {crop[0]}x{crop[1]} crop")
    return (height - crop[0]) // 2, (width - crop[1]) // 2


NYU = DatasetDescription(
    name="nyu",
    title="NYU Depth v2",
    cache_crop=IMAGE_SIZE,
    cache_crop_name="full image",
    gt_name="Kinect",
    cache_box=whole_image_box,
    train_region=BORDER_CROP,
    train_crop=TRAIN_CROP,
    random_top=True,
    loss_top_row=LOSS_TOP_ROW,
    min_depth=MIN_DEPTH,
    max_depth=MAX_DEPTH,
    n_bins=N_BINS,
    sigma=SIGMA,
    gt_scale=GT_SCALE,
    brightness_range=BRIGHTNESS_RANGE,
    eval_crops={"eigen": EIGEN_CROP},
    eval_crop="eigen",
    read_split=read_split,
    check_root=check_root,
    check_image=check_image,
    check_gt=check_gt,
    read_image=read_image,
    read_gt=read_gt,
    image_size=IMAGE_SIZE,
    sample_module="tiekd.data.sample.nyu",
)
"""NYU Depth v2 as BTS, AdaBins and the authors train and evaluate on it."""
