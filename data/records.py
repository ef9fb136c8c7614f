"""Split files: one record a line, parsed once into a :class:`Record`.

A split file has one record a line, ``RGB_REL GT_REL|None FOCAL``, e.g. (KITTI)::

    2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png \
        2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377

Every path is derived from the record and a root, never by slicing strings at fixed offsets, so
the data can live anywhere. Dataset modules (:mod:`tiekd.data.kitti`, :mod:`tiekd.data.nyu`) wrap
these readers with their own conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tiekd.pipeline.errors import DataError
from tiekd.pipeline.files import require_file


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


def read_split(path: str | Path, *, rooted: bool) -> list[Record]:
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


def check_root(root: str | Path, *, flag: str) -> Path:
    """An existing directory given by ``flag``, or a DataError that names the flag."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{flag} {root} is not an existing directory")
    return root
