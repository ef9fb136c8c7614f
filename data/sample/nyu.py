"""A small, deterministic, procedural indoor dataset in NYU Depth v2's layouts (see :mod:`tiekd.data.nyu`)::

    OUT/sync/<scene>/rgb_XXXXX.jpg, sync_depth_XXXXX.png       training frames, BTS layout
    OUT/official_splits/test/<scene>/rgb_XXXXX.jpg, ...png      test frames, XXXXX = frame of the .mat
    OUT/nyu_depth_v2_labeled.mat                                 MATLAB v7.3 labeled file (h5py)
    OUT/splits/train.txt    "/scene/rgb_XXXXX.jpg /scene/sync_depth_XXXXX.png FOCAL", leading "/"
    OUT/splits/test.txt     "scene/rgb_XXXXX.jpg scene/sync_depth_XXXXX.png FOCAL", no final newline
    OUT/unlabelled/<scene>/rgb_XXXXX.jpg, OUT/splits/unlabelled.txt   images without depth, their list

Rooms are drawn by :mod:`tiekd.data.sample.room`. As in the real data, training depth PNGs have
holes (0 = no measurement), the labeled file's ``depths`` are dense and its ``rawDepths`` have
holes; the extracted test folder is what BTS's extraction writes from the labeled file: the raw
depths truncated to millimetres, the images with a black border as JPEG. The labeled file holds
twice as many frames as the test split (the others stand for its training frames); test frame i
is frame 2 i + 1. The same seed gives identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tiekd.data.images import write_depth_png
from tiekd.data.nyu import EXTRACTED_REGION, GT_SCALE, IMAGE_SIZE
from tiekd.data.nyu_mat import depth_png_values, with_black_border, write_labeled_file
from tiekd.data.sample.kitti import SampleDataset, write_unlabelled_list
from tiekd.data.sample.room import FOCAL_X, render_room
from tiekd.pipeline.errors import ConfigError

SCENE_KINDS = ("bedroom", "kitchen", "living_room", "office", "bathroom")
FRAMES_PER_SCENE = 4
"""Consecutive training frames share a scene name, as a recording does."""
FIRST_FRAME, FRAME_STEP = 1, 7
"""Frame numbers of training files (rgb_00001, rgb_00008, ...)."""
LABELED_PER_TEST = 2
"""The labeled file holds this many frames per test frame; test frame i is frame 2 i + 1."""
HOLE_SHARE = 0.02
"""Share of training and raw depth pixels with no measurement (0), as the Kinect leaves."""
RAW_HOLES_STREAM = 2
"""Seed stream of the holes of the labeled file's raw depths."""
JPEG_QUALITY = 95
SPLIT_STREAM = {"train": 0, "labeled": 1, "unlabelled": 3}
"""Seed stream of each kind of frame, so that no two frames share a room (2 is the raw holes')."""
MAT_NAME = "nyu_depth_v2_labeled.mat"


@dataclass(frozen=True)
class IndoorFrame:
    """One frame's place in the layout."""

    scene: str
    number: int
    """XXXXX of the file names (for test frames: the frame of the labeled file)."""

    @property
    def rgb(self) -> str:
        return f"{self.scene}/rgb_{self.number:05d}.jpg"

    @property
    def depth(self) -> str:
        return f"{self.scene}/sync_depth_{self.number:05d}.png"


def sample_paths(out: Path) -> SampleDataset:
    """Where :func:`write_sample_dataset` puts the data under ``out``; the test split is read from
    the labeled file (its folder copy is under ``official_splits/test``)."""
    out = Path(out)
    return SampleDataset(
        data_root=out / "sync",
        gt_root=out / "sync",
        dense_gt_root=out / "sync",
        train_split=out / "splits" / "train.txt",
        test_split=out / "splits" / "test.txt",
        test_data_root=out / MAT_NAME,
        test_gt_root=out / MAT_NAME,
        unlabelled=out / "splits" / "unlabelled.txt",
        unlabelled_root=out / "unlabelled",
    )


def official_test_folder(out: Path) -> Path:
    """The extracted official test set of the sample."""
    return Path(out) / "official_splits" / "test"


def _train_frame(index: int) -> IndoorFrame:
    kind = SCENE_KINDS[(index // FRAMES_PER_SCENE) % len(SCENE_KINDS)]
    return IndoorFrame(f"{kind}_{index // FRAMES_PER_SCENE:04d}", FIRST_FRAME + FRAME_STEP * index)


def _test_frame(index: int) -> IndoorFrame:
    return IndoorFrame(SCENE_KINDS[index % len(SCENE_KINDS)], LABELED_PER_TEST * index + 1)


def _unlabelled_frame(index: int) -> IndoorFrame:
    return IndoorFrame(f"unlabelled_{index // FRAMES_PER_SCENE:04d}", FIRST_FRAME + FRAME_STEP * index)


def render(seed: int, stream: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of a stream: image uint8 (480, 640, 3) and dense depth float32 metres."""
    rng = np.random.default_rng([seed, SPLIT_STREAM[stream], index])
    return render_room(rng, height=IMAGE_SIZE[0], width=IMAGE_SIZE[1])


def _write_pair(root: Path, frame: IndoorFrame, image: np.ndarray, depth: np.ndarray) -> None:
    (root / frame.rgb).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / frame.rgb, quality=JPEG_QUALITY)
    write_depth_png(root / frame.depth, depth, scale=GT_SCALE)


def _write_train(out: Path, n_train: int, seed: int) -> list[IndoorFrame]:
    frames = [_train_frame(i) for i in range(n_train)]
    for i, frame in enumerate(frames):
        image, depth = render(seed, "train", i)
        holes = np.random.default_rng([seed, i]).random(depth.shape) < HOLE_SHARE
        _write_pair(out / "sync", frame, image, np.where(holes, 0, depth))
    return frames


def raw_depth(seed: int, index: int, depth: np.ndarray) -> np.ndarray:
    """Frame ``index`` of the labeled file's raw depths: its dense depth with holes (0)."""
    holes = np.random.default_rng([seed, RAW_HOLES_STREAM, index]).random(depth.shape) < HOLE_SHARE
    return np.where(holes, np.float32(0), depth).astype(np.float32)


def _write_unlabelled(paths: SampleDataset, n_unlabelled: int, seed: int) -> None:
    """Images of rooms of their own seed stream, without depth, and their list file."""
    frames = [_unlabelled_frame(i) for i in range(n_unlabelled)]
    for i, frame in enumerate(frames):
        image, _ = render(seed, "unlabelled", i)
        (paths.unlabelled_root / frame.rgb).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(paths.unlabelled_root / frame.rgb, quality=JPEG_QUALITY)
    if frames:
        write_unlabelled_list(paths.unlabelled, [paths.unlabelled_root / frame.rgb for frame in frames])


def _write_extracted(root: Path, frame: IndoorFrame, image: np.ndarray, raw: np.ndarray) -> None:
    """A frame as BTS's extraction writes it: black-bordered JPEG, truncated millimetre PNG."""
    (root / frame.rgb).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(with_black_border(image, kept=EXTRACTED_REGION)).save(root / frame.rgb, quality=JPEG_QUALITY)
    Image.fromarray(depth_png_values(raw, scale=GT_SCALE)).save(root / frame.depth)


def _write_labeled(out: Path, n_test: int, seed: int) -> list[IndoorFrame]:
    """The labeled file and the test frames extracted from it into the BTS test folder."""
    frames = [_test_frame(i) for i in range(n_test)]
    rendered = [render(seed, "labeled", n) for n in range(LABELED_PER_TEST * n_test)]
    images, depths = (np.stack(parts) for parts in zip(*rendered))
    raw = np.stack([raw_depth(seed, n, depth) for n, depth in enumerate(depths)])
    for frame in frames:
        _write_extracted(official_test_folder(out), frame, images[frame.number], raw[frame.number])
    write_labeled_file(out / MAT_NAME, images, depths, raw)
    return frames


def _split_text(frames: list[IndoorFrame], *, rooted: bool) -> str:
    slash = "/" if rooted else ""
    return "\n".join(f"{slash}{f.rgb} {slash}{f.depth} {FOCAL_X}" for f in frames)


def write_sample_dataset(
    out: Path, *, n_train: int = 32, n_test: int = 8, seed: int = 0, n_unlabelled: int = 0
) -> SampleDataset:
    """Write the procedural indoor dataset of n_train + n_test frames under ``out`` (both layouts),
    and n_unlabelled images without depth."""
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"--train {n_train} --test {n_test}: the NYU sample needs at least 1 frame of each")
    if seed < 0:
        raise ConfigError(f"--seed {seed}: pass a seed of 0 or more")
    if n_unlabelled < 0:
        raise ConfigError(f"--unlabelled {n_unlabelled}: pass a number of frames of 0 or more")
    paths = sample_paths(out)
    train, test = _write_train(Path(out), n_train, seed), _write_labeled(Path(out), n_test, seed)
    _write_unlabelled(paths, n_unlabelled, seed)
    paths.train_split.parent.mkdir(parents=True, exist_ok=True)
    # The split files last: both present = the sample is complete (the demo reuses it).
    paths.train_split.write_text(_split_text(train, rooted=True) + "\n")
    paths.test_split.write_text(_split_text(test, rooted=False))
    return paths
