"""A lab's own dataset, described in a YAML file given as ``--dataset PATH.yaml``.

The file fills one :class:`~tiekd.data.description.DatasetDescription`, so every stage takes it
where it takes ``kitti`` or ``nyu``, without editing tiekd. Its keys (``name``, ``min_depth``,
``max_depth``, ``n_bins``, ``sigma`` and ``train_crop`` are required)::

    name: lab-rover             # recorded in stores and runs
    title: Lab rover            # for messages [default: name]
    image_size: [480, 640]      # (H, W) every image has; the stored maps' size unless `crop` is given
    crop: null                  # (H, W) region the teacher runs on [default: the whole image]
    crop_anchor: centre         # where `crop` sits: centre or bottom-centre (KITTI's KB crop)
    min_depth: 0.1              # metres
    max_depth: 20.0
    n_bins: 256
    sigma: 0.3                  # metres, the paper-form teacher DPM's std
    train_crop: [416, 544]      # random training crop (H, W)
    train_region: null          # (top, bottom, left, right) inside the crop [default: all of it]
    random_top: true            # random vertical offset of the training crop
    loss_top_row: 0             # first row of the training crop the TIE-KD loss sees
    brightness_range: [0.9, 1.1]
    gt_scale: 1000              # value per metre of the 16-bit depth PNGs (NYU 1000, KITTI 256)
    gt_name: depth sensor
    eval_crops: {}              # NAME: {top, bottom, left, right, relative}, as CropBox
    eval_crop: none

Images keep their whole field of view unless ``crop`` asks for less. Split files are the usual
``RGB GT|None FOCAL`` lines, paths relative to ``--data-root`` / ``--gt-root``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import yaml

from tiekd.data import images, records
from tiekd.data.description import CropBox, DatasetDescription
from tiekd.data.records import Record
from tiekd.pipeline.errors import ConfigError, DataError

REQUIRED = ("name", "min_depth", "max_depth", "n_bins", "sigma", "train_crop")
"""Keys a description file must give: they set the student's bins and training geometry."""
OPTIONAL = {
    "title": None,
    "image_size": None,
    "crop": None,
    "crop_anchor": "centre",
    "train_region": None,
    "random_top": True,
    "loss_top_row": 0,
    "brightness_range": (0.9, 1.1),
    "gt_scale": 1000.0,
    "gt_name": "depth sensor",
    "eval_crops": {},
    "eval_crop": "none",
}
"""Keys with defaults: the whole image, NYU's random vertical offset and its millimetre PNGs,
BTS's brightness range, no evaluation crop."""
ANCHORS = ("centre", "bottom-centre")
DESCRIPTION_SUFFIXES = (".yaml", ".yml")


def is_description_file(name: str) -> bool:
    """Whether a --dataset value names a description file rather than a built-in dataset."""
    return str(name).lower().endswith(DESCRIPTION_SUFFIXES)


def anchored_box(height: int, width: int, *, crop: tuple[int, int], anchor: str) -> tuple[int, int]:
    """(top, left) of a ``crop`` in an image of height x width: centred, or on the bottom rows
    and centred across (``bottom-centre``, KITTI's KB crop); DataError if the image is smaller."""
    crop_h, crop_w = crop
    if height < crop_h or width < crop_w:
        raise DataError(f"image of {height}x{width} is smaller than the {crop_h}x{crop_w} crop")
    top = height - crop_h if anchor == "bottom-centre" else (height - crop_h) // 2
    return top, (width - crop_w) // 2


def check_image(data_root: Path, record: Record) -> None:
    """Refuse a record whose image is not under the root."""
    if not (data_root / record.rgb).is_file():
        raise DataError(f"image {record.rgb} (split line {record.line}) is not under --data-root {data_root}")


def check_gt(gt_root: Path, record: Record) -> None:
    """Refuse a record whose GT file is not under the root."""
    if record.gt is not None and not (gt_root / record.gt).is_file():
        raise DataError(f"ground truth {record.gt} (split line {record.line}) is not under --gt-root {gt_root}")


def read_image(data_root: Path, record: Record) -> np.ndarray:
    """A record's whole image, uint8 (H, W, 3)."""
    return images.read_rgb(data_root / record.rgb)


def read_gt(gt_root: Path, record: Record, *, scale: float) -> np.ndarray | None:
    """A record's GT, float32 (H, W) metres = PNG value / ``scale`` (0 = none); None without GT."""
    return None if record.gt is None else images.read_depth_png(gt_root / record.gt, scale=scale)


def read_split(path: str | Path) -> list[Record]:
    """The records of a split file (paths relative to the roots)."""
    return records.read_split(path, rooted=False)


def _pair(values: dict, key: str, path: Path) -> tuple[int, int] | None:
    value = values[key]
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ConfigError(f"--dataset {path}: {key} {value!r} is not [HEIGHT, WIDTH] in pixels; fix the file")
    return tuple(value)


def _numbers(values: dict, path: Path) -> None:
    """Refuse depth and DPM settings the stages would only fail on."""
    try:
        low, high, sigma, scale = (float(values[k]) for k in ("min_depth", "max_depth", "sigma", "gt_scale"))
        bins = values["n_bins"]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--dataset {path}: a depth setting is not a number ({e}); fix the file") from None
    if not (0 < low < high and math.isfinite(high) and sigma > 0 and scale > 0):
        raise ConfigError(f"--dataset {path}: needs 0 < min_depth < max_depth, sigma > 0 and gt_scale > 0")
    if not (isinstance(bins, int) and bins >= 2):
        raise ConfigError(f"--dataset {path}: n_bins {bins!r} must be a whole number of at least 2")


def _values(path: Path) -> dict:
    """The file's keys with the defaults filled in; ConfigError on a missing, unknown or bad key."""
    try:
        given = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--dataset {path}: no such description file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"--dataset {path}: not a readable YAML file ({type(e).__name__})") from None
    if not isinstance(given, dict):
        raise ConfigError(f"--dataset {path}: expected a mapping of keys (name, max_depth, ...)")
    missing = [k for k in REQUIRED if k not in given]
    unknown = sorted(set(given) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown key {unknown[0]!r}"
        raise ConfigError(f"--dataset {path} {what}; see the keys in the README (distil on your own images)")
    values = OPTIONAL | given
    _numbers(values, path)
    if values["crop_anchor"] not in ANCHORS:
        raise ConfigError(f"--dataset {path}: crop_anchor {values['crop_anchor']!r} is not one of {', '.join(ANCHORS)}")
    return values


def _geometry(values: dict, path: Path) -> dict:
    """The description's sizes: the stored maps are the crop, else the whole image."""
    image_size, crop, train_crop = (_pair(values, k, path) for k in ("image_size", "crop", "train_crop"))
    cache_crop = crop or image_size
    if cache_crop is None:
        raise ConfigError(f"--dataset {path}: give image_size (the whole image is kept) or crop")
    if image_size and (cache_crop[0] > image_size[0] or cache_crop[1] > image_size[1]):
        raise ConfigError(f"--dataset {path}: crop {list(cache_crop)} is larger than image_size {list(image_size)}")
    region = values["train_region"]
    train_size = cache_crop if region is None else (region[1] - region[0], region[3] - region[2])
    if train_crop[0] > train_size[0] or train_crop[1] > train_size[1]:
        raise ConfigError(
            f"--dataset {path}: train_crop {list(train_crop)} is larger than the {train_size} it is cut from"
        )
    if not 0 <= values["loss_top_row"] < train_crop[0]:
        raise ConfigError(f"--dataset {path}: loss_top_row must be a row of train_crop")
    return {
        "image_size": image_size,
        "cache_crop": cache_crop,
        "cache_crop_name": "crop" if crop else "whole image",
        "train_crop": train_crop,
        "train_region": None if region is None else tuple(region),
    }


def _eval_crops(values: dict, path: Path) -> dict[str, CropBox]:
    try:
        crops = {name: CropBox(**box) for name, box in (values["eval_crops"] or {}).items()}
    except TypeError as e:
        raise ConfigError(
            f"--dataset {path}: eval_crops: {e}; each is {{top, bottom, left, right, relative}}"
        ) from None
    if values["eval_crop"] not in (*crops, "none"):
        raise ConfigError(f"--dataset {path}: eval_crop {values['eval_crop']!r} is not one of eval_crops or none")
    return crops


@functools.lru_cache(maxsize=16)
def _described(path: Path, mtime_ns: int) -> DatasetDescription:
    values = _values(path)
    return DatasetDescription(
        name=str(values["name"]),
        title=str(values["title"] or values["name"]),
        gt_name=str(values["gt_name"]),
        cache_box=functools.partial(anchored_box, anchor=values["crop_anchor"]),
        random_top=bool(values["random_top"]),
        loss_top_row=int(values["loss_top_row"]),
        min_depth=float(values["min_depth"]),
        max_depth=float(values["max_depth"]),
        n_bins=int(values["n_bins"]),
        sigma=float(values["sigma"]),
        brightness_range=tuple(float(v) for v in values["brightness_range"]),
        gt_scale=float(values["gt_scale"]),
        eval_crops=_eval_crops(values, path),
        eval_crop=str(values["eval_crop"]),
        read_split=read_split,
        check_root=records.check_root,
        check_image=check_image,
        check_gt=check_gt,
        read_image=read_image,
        read_gt=functools.partial(read_gt, scale=float(values["gt_scale"])),  # the same value as gt_scale
        source=str(path),
        **_geometry(values, path),
    )


def read_description(path: str | Path) -> DatasetDescription:
    """The description in ``path`` (read again only when the file changes)."""
    path = Path(path).expanduser().resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise ConfigError(f"--dataset {path}: no such description file; give a kitti, nyu or a PATH.yaml") from None
    return _described(path, mtime)
