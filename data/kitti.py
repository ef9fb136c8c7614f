"""KITTI split records, paths and readers.

A split file has one record a line, ``RGB_REL GT_REL|None FOCAL``, e.g.::

    2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png \
        2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377

Each line is parsed once into a :class:`Record`; every path is derived from the record and a
root, never by slicing strings at fixed offsets, so the data can live anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from tiekd.data.description import CropBox, DatasetDescription
from tiekd.pipeline.errors import DataError
from tiekd.pipeline.files import require_file
from tiekd.pipeline.metrics import EIGEN_CROP, GARG_CROP

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


@dataclass(frozen=True)
class Record:
    """One line of a split file."""

    rgb: str
    """RGB image path relative to the KITTI raw root; also the sample id in the cache."""
    gt: str | None
    """Ground-truth depth path relative to the annotated-depth root; None where the split has none."""
    focal: float
    """Focal length in pixels."""
    line: int
    """1-based line number in the split file, for error messages."""


def _checked_relative(text: str, *, split: Path, line: int, rooted: bool = False) -> str:
    """Refuse a path that is absolute or climbs out of its root.

    ``rooted``: one leading "/" means the root itself, as in the BTS NYU training split
    (``/kitchen_0028b/rgb_00045.jpg``), which BTS joins to the data root by concatenation.
    """
    path = PurePosixPath(text[1:] if rooted and text.startswith("/") else text)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(
            f"{split}:{line}: path {text!r} is absolute or escapes its root; "
            "split files hold paths relative to --data-root and --gt-root"
        )
    return str(path)


def parse_split_line(text: str, *, split: Path, line: int, rooted: bool = False) -> Record:
    """Parse one non-blank split line into a :class:`Record` (``rooted``: see :func:`_checked_relative`)."""
    fields = text.split()
    if len(fields) != 3:
        raise DataError(f"{split}:{line}: expected 'RGB_PATH GT_PATH|None FOCAL', got {text.strip()!r}")
    rgb, gt, focal = fields
    try:
        focal_px = float(focal)
    except ValueError:
        raise DataError(f"{split}:{line}: focal length {focal!r} is not a number") from None
    return Record(
        rgb=_checked_relative(rgb, split=split, line=line, rooted=rooted),
        gt=None if gt == "None" else _checked_relative(gt, split=split, line=line, rooted=rooted),
        focal=focal_px,
        line=line,
    )


def read_split(path: str | Path, *, rooted: bool = False) -> list[Record]:
    """All records of a split file, in order. Blank lines are skipped; ids must be unique.
    ``rooted``: paths may start with one "/" that stands for the root (BTS's NYU split)."""
    path = require_file(path, what="split file", error=DataError, hint="; pass an existing file to --split")
    try:
        # utf-8-sig drops the byte-order mark some Windows editors put before the first path.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read split file {path}: {e}") from e
    records, first_line = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = parse_split_line(line, split=path, line=number, rooted=rooted)
        if record.rgb in first_line:
            raise DataError(
                f"{path}:{number}: image {record.rgb} is listed twice "
                f"(first on line {first_line[record.rgb]}); remove the duplicate"
            )
        first_line[record.rgb] = number
        records.append(record)
    if not records:
        raise DataError(f"split file {path} holds no records")
    return records


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_root(root: str | Path, *, flag: str) -> Path:
    """An existing directory given by ``flag``, or a DataError that names the flag."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{flag} {root} is not an existing directory")
    return root


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


def _open_image(path: Path, *, what: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist; check --data-root / --gt-root") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a directory, not a file; check the split file's paths") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{what} {path} is not a readable image ({type(e).__name__}); re-extract it") from e


def read_rgb(path: Path) -> np.ndarray:
    """An RGB image as uint8 HxWx3. Images of more than 8 bits a channel (e.g. 16-bit grayscale)
    are refused: PIL's conversion to RGB would saturate them instead of scaling."""
    image = _open_image(path, what="image")
    if ImageMode.getmode(image.mode).typestr not in ("|u1", "|b1"):
        raise DataError(
            f"image {path} is not an 8-bit image (PIL mode {image.mode}); convert it to 8-bit RGB "
            "(KITTI's colour images are 8-bit RGB PNGs)"
        )
    return np.asarray(image.convert("RGB"))


def read_cropped_rgb(data_root: Path, record: Record, *, crop: tuple[int, int] = (KB_HEIGHT, KB_WIDTH)) -> np.ndarray:
    """The KB crop of a record's image, uint8 HxWx3; errors name the image."""
    path = rgb_path(data_root, record)
    image = read_rgb(path)
    try:
        return kb_crop(image, crop=crop)
    except DataError as e:
        raise DataError(f"image {path}: {e.message}") from None


def read_depth_png(path: Path, *, scale: float = GT_SCALE) -> np.ndarray:
    """A 16-bit depth PNG as float32 HxW metres = value / scale (0 where there is no measurement);
    KITTI's scale is 256 (NYU's millimetres: 1000)."""
    image = _open_image(path, what="depth map")
    if image.mode not in ("I;16", "I;16B", "I"):
        raise DataError(f"depth map {path} has mode {image.mode}; KITTI and NYU depth PNGs are 16-bit")
    return np.asarray(image, dtype=np.float32) / np.float32(scale)


def write_depth_png(path: Path, depth: np.ndarray, *, scale: float = GT_SCALE) -> None:
    """Write float metres as a 16-bit depth PNG (uint16, value = round(depth * scale), 0 = none)."""
    value = np.clip(np.round(depth * scale), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(value).save(path)


def check_image(data_root: Path, record: Record) -> None:
    """Refuse a record whose RGB image is not under the root."""
    if not rgb_path(data_root, record).is_file():
        raise DataError(f"image {record.rgb} (split line {record.line}) is not under --data-root {data_root}")


def check_gt(gt_root: Path, record: Record) -> None:
    """Refuse a record whose GT file is in none of the accepted places."""
    gt_path(gt_root, record)


def read_image(data_root: Path, record: Record) -> np.ndarray:
    """A record's full RGB image, uint8 HxWx3."""
    return read_rgb(rgb_path(data_root, record))


def read_gt(gt_root: Path, record: Record) -> np.ndarray | None:
    """A record's full-size GT depth, float32 HxW metres (0 = none); None where the split has none."""
    path = gt_path(gt_root, record)
    return None if path is None else read_depth_png(path)


KITTI = DatasetDescription(
    name="kitti",
    title="KITTI",
    cache_crop=(KB_HEIGHT, KB_WIDTH),
    cache_crop_name="KB crop",
    cache_box=kb_crop_box,
    train_region=None,
    train_crop=TRAIN_CROP,
    random_top=False,
    loss_top_row=KITTI_LOSS_TOP_ROW,
    min_depth=MIN_DEPTH,
    max_depth=MAX_DEPTH,
    n_bins=N_BINS,
    sigma=SIGMA,
    eval_crops={"garg": CropBox(*GARG_CROP, relative=True), "eigen": CropBox(*EIGEN_CROP, relative=True)},
    eval_crop="garg",
    read_split=read_split,
    check_root=check_root,
    check_image=check_image,
    check_gt=check_gt,
    read_image=read_image,
    read_gt=read_gt,
    sample_module="tiekd.data.sample",
)
"""KITTI with the Eigen split, as the authors train and evaluate on it."""
