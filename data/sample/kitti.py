"""A small, deterministic, procedural dataset in KITTI's layout, for tests, benchmarks and the demo.

tiekd cannot download KITTI, so :func:`write_sample_dataset` ray-casts street scenes and writes
them exactly where the real readers look (see :mod:`tiekd.data.kitti`)::

    OUT/raw/<date>/<date>_drive_<NNNN>_sync/image_02/data/<frame>.png        RGB at the real size
    OUT/gt/{train,val}/<date>_drive_<NNNN>_sync/proj_depth/groundtruth/image_02/<frame>.png
                                                              sparse LiDAR-like depth (uint16)
    OUT/dense/<date>_drive_<NNNN>_sync/proj_depth/groundtruth/image_02/<frame>.png  dense depth
    OUT/splits/train.txt, OUT/splits/test.txt     ``RGB_REL GT_REL|None FOCAL`` records
    OUT/unlabelled/<date>/<date>_drive_<NNNN>_sync/image_02/data/<frame>.png   images without GT
    OUT/splits/unlabelled.txt                     their list file (``cache-teacher --images``)

The unlabelled frames (``n_unlabelled``) are scenes of their own seed stream and drives, never
the training or test scenes; no depth is written for them.

The scenes and their depth cues are drawn by :mod:`tiekd.data.sample.street` and rendered by
:mod:`tiekd.data.sample.render`; this module plans the frames and writes the files. The same
seed gives byte-identical files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tiekd.data.kitti import IMAGE_SIZES, write_depth
from tiekd.data.sample.render import render_frame
from tiekd.data.sample.street import sample_camera, sample_scene
from tiekd.pipeline.errors import ConfigError

# --- Dataset layout -------------------------------------------------------------------------
# Focal length in pixels of the left colour camera per recording date (KITTI raw calibration,
# P_rect_02[0, 0]); the published Eigen split files carry the same numbers.
FOCALS = {
    "2011_09_26": 721.5377,
    "2011_09_28": 707.0493,
    "2011_09_29": 718.3351,
    "2011_09_30": 707.0912,
    "2011_10_03": 718.856,
}
DATES = tuple(IMAGE_SIZES)
# Frames cycle over the dates, then over DRIVES_PER_DATE drives of each; test frames come from
# other drives than training frames, as in the Eigen split.
DRIVES_PER_DATE = 2
FIRST_DRIVE = {"train": 1, "test": 11, "unlabelled": 21}
# Frame numbers of a sparse subsample of the drives; KITTI's first annotated frame is 5.
FIRST_FRAME = 5
FRAME_STEP = 10
# Every NO_GT_PERIOD-th test record, from the second on, has GT ``None`` (45 of the 697 Eigen
# test records have none); so at least MIN_TEST test frames are needed.
NO_GT_PERIOD = 7
NO_GT_OFFSET = 1
MIN_TEST = 2
# data_depth_annotated is downloaded as train/ and val/ folders.
GT_FOLDER = {"train": "train", "test": "val"}
# Seed stream of each split, so that train and test frames never share a scene.
SPLIT_STREAM = {"train": 0, "test": 1, "unlabelled": 2}
# zlib level of the RGB PNGs: level 1 writes these textured images about three times faster
# than the default 6, for files about 20 % larger.
RGB_PNG_COMPRESSION = 1


# --- Writing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleDataset:
    """Where :func:`write_sample_dataset` put the data."""

    data_root: Path
    """KITTI raw root (--data-root): ``<date>/<drive>/image_02/data/<frame>.png``."""
    gt_root: Path
    """Sparse annotated depth (--gt-root), as downloaded: ``train/`` and ``val/`` folders."""
    dense_gt_root: Path
    """Dense depth of every frame with GT, merged layout: for training a small teacher."""
    train_split: Path
    test_split: Path
    test_data_root: Path | None = None
    """Images of the test split where they are not under data_root (NYU: the labeled .mat)."""
    test_gt_root: Path | None = None
    """GT of the test split where it is not under gt_root."""
    unlabelled: Path | None = None
    """List file of the images without GT (``cache-teacher --images``), written where some are asked for."""
    unlabelled_root: Path | None = None
    """Folder of the images without GT."""

    @property
    def eval_data_root(self) -> Path:
        """--data-root for the test split."""
        return self.test_data_root or self.data_root

    @property
    def eval_gt_root(self) -> Path:
        """--gt-root for the test split."""
        return self.test_gt_root or self.gt_root


@dataclass(frozen=True)
class FramePlan:
    """One frame to generate: its split record and its seed."""

    split: str
    """"train", "test" or "unlabelled"."""
    index: int
    """Position in its split file (0-based)."""
    date: str
    drive: int
    frame: int
    has_gt: bool

    @property
    def drive_name(self) -> str:
        return f"{self.date}_drive_{self.drive:04d}_sync"

    @property
    def rgb_rel(self) -> str:
        return f"{self.date}/{self.drive_name}/image_02/data/{self.frame:010d}.png"

    @property
    def gt_rel(self) -> str:
        return f"{self.drive_name}/proj_depth/groundtruth/image_02/{self.frame:010d}.png"

    @property
    def split_line(self) -> str:
        return f"{self.rgb_rel} {self.gt_rel if self.has_gt else 'None'} {FOCALS[self.date]}"


def plan_frames(split: str, count: int) -> list[FramePlan]:
    """The frames of one split: the dates cycle fastest, then the drives."""
    plans = []
    for index in range(count):
        drive = FIRST_DRIVE[split] + (index // len(DATES)) % DRIVES_PER_DATE
        has_gt = split == "train" or (split == "test" and index % NO_GT_PERIOD != NO_GT_OFFSET)
        frame = FIRST_FRAME + FRAME_STEP * index
        plans.append(FramePlan(split, index, DATES[index % len(DATES)], drive, frame, has_gt))
    return plans


def write_split(path: Path, plans: list[FramePlan], *, final_newline: bool) -> None:
    """Write a split file (the published Eigen test file has no newline after its last line)."""
    text = "\n".join(plan.split_line for plan in plans) + ("\n" if final_newline else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_frame(dataset: SampleDataset, plan: FramePlan, *, seed: int) -> None:
    """Render one frame; write its RGB and, if it has GT, its sparse and dense depth."""
    rng = np.random.default_rng([seed, SPLIT_STREAM[plan.split], plan.index])
    height, width = IMAGE_SIZES[plan.date]
    camera = sample_camera(rng, height=height, width=width, focal=FOCALS[plan.date])
    rgb, dense, sparse = render_frame(sample_scene(rng), camera, rng)
    rgb_file = (dataset.unlabelled_root if plan.split == "unlabelled" else dataset.data_root) / plan.rgb_rel
    rgb_file.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(rgb_file, compress_level=RGB_PNG_COMPRESSION)
    if plan.has_gt:
        write_depth(dataset.gt_root / GT_FOLDER[plan.split] / plan.gt_rel, sparse)
        write_depth(dataset.dense_gt_root / plan.gt_rel, dense)


def sample_paths(out: Path) -> SampleDataset:
    """Where :func:`write_sample_dataset` puts the data under ``out``."""
    out = Path(out)
    return SampleDataset(
        data_root=out / "raw",
        gt_root=out / "gt",
        dense_gt_root=out / "dense",
        train_split=out / "splits" / "train.txt",
        test_split=out / "splits" / "test.txt",
        unlabelled=out / "splits" / "unlabelled.txt",
        unlabelled_root=out / "unlabelled",
    )


def write_unlabelled_list(path: Path, images: list[Path]) -> None:
    """The list file of the unlabelled images: one path a line, relative to its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{os.path.relpath(image, path.parent)}\n" for image in images))


def write_sample_dataset(
    out: Path, *, n_train: int = 32, n_test: int = 8, seed: int = 0, n_unlabelled: int = 0
) -> SampleDataset:
    """Write a procedural KITTI-format dataset of n_train + n_test (+ n_unlabelled images without
    GT) frames under ``out``.

    Files already there are overwritten; the same arguments give byte-identical files.
    """
    if n_train < 1:
        raise ConfigError(f"--train {n_train}: the sample dataset needs at least 1 training frame")
    if n_test < MIN_TEST:
        raise ConfigError(
            f"--test {n_test}: the sample dataset needs at least {MIN_TEST} test frames "
            "(one of them has no GT, as in the Eigen test split)"
        )
    if seed < 0:
        raise ConfigError(f"--seed {seed}: pass a seed of 0 or more")
    if n_unlabelled < 0:
        raise ConfigError(f"--unlabelled {n_unlabelled}: pass a number of frames of 0 or more")
    dataset = sample_paths(out)
    train, test = plan_frames("train", n_train), plan_frames("test", n_test)
    unlabelled = plan_frames("unlabelled", n_unlabelled)
    for plan in train + test + unlabelled:
        write_frame(dataset, plan, seed=seed)
    write_split(dataset.train_split, train, final_newline=True)
    write_split(dataset.test_split, test, final_newline=False)
    if unlabelled:
        write_unlabelled_list(dataset.unlabelled, [dataset.unlabelled_root / plan.rgb_rel for plan in unlabelled])
    return dataset
