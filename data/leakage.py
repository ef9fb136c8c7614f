"""The leakage guard: training frames that are also evaluation frames are refused.

A training frame leaks when it is an image of the evaluation split given (``--test-split``):

- the same content: its decoded pixels hash as one of the split's images do
  (:func:`~tiekd.data.sources.fit.content_sha256`; image sources are hashed when listed);
- the same image: a split record naming the same path (labelled splits are not decoded twice);
- for KITTI, the same drive: its path holds a drive folder (``2011_09_26_drive_0002_sync``) that one
  of the split's images comes from. The drives are read from the split file the user gives, so no
  split file ships with tiekd (the Eigen test split's 28 drives are those of its 697 lines).

``--allow-leakage`` trains on such frames anyway, and the store or run.json says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tiekd.data.description import DatasetDescription
from tiekd.data.sources.fit import content_sha256
from tiekd.pipeline.errors import DataError
from tiekd.pipeline.files import file_sha256

KITTI_DRIVE = re.compile(r"\d{4}_\d{2}_\d{2}_drive_\d{4}_sync")
"""A KITTI raw drive folder's name, e.g. 2011_09_26_drive_0002_sync."""


def drive_of(path: str) -> str | None:
    """The KITTI drive folder a path lies in, or None."""
    return next((part for part in PurePosixPath(path).parts if KITTI_DRIVE.fullmatch(part)), None)


@dataclass(frozen=True)
class EvaluationSplit:
    """What the guard knows of the evaluation split: its images' paths, content hashes and drives."""

    split: str
    split_sha256: str
    paths: frozenset[str]
    hashes: dict[str, str]
    """Content hash -> the split's image with it."""
    drives: frozenset[str]

    @classmethod
    def read(cls, split: Path, data_root: Path, dataset: DatasetDescription) -> EvaluationSplit:
        """Read the split and decode its images once (for their content hashes)."""
        records = dataset.read_split(split)
        hashes = {content_sha256(dataset.read_image(Path(data_root), r)): r.rgb for r in records}
        return cls(
            split=str(split),
            split_sha256=file_sha256(split),
            paths=frozenset(r.rgb for r in records),
            hashes=hashes,
            drives=frozenset(d for d in map(drive_of, (r.rgb for r in records)) if d),
        )

    def why_leaks(self, frame) -> str | None:
        """Why a training frame (a split record or a source frame) is an evaluation image, or None."""
        sha = getattr(frame, "sha256", None)
        if sha is not None and sha in self.hashes:
            return f"same content as {self.hashes[sha]}"
        if frame.rgb in self.paths:
            return "listed in it"
        drive = drive_of(getattr(frame, "path", frame.rgb))
        if drive in self.drives:
            return f"from its drive {drive}"
        return None

    def check(self, frames: list, *, allow: bool, what: str) -> dict:
        """Refuse ``frames`` holding evaluation images (unless ``allow``); returns the record of the
        check for the store or run.json."""
        found = [(f.rgb, why) for f in frames if (why := self.why_leaks(f)) is not None]
        if found and not allow:
            first, why = found[0]
            raise DataError(
                f"{len(found)} of the {len(frames)} {what} are images of the evaluation split {self.split} "
                f"(first: {first}, {why}); drop them, or pass --allow-leakage to use them anyway (it is recorded)"
            )
        return {
            "test_split": self.split,
            "test_split_sha256": self.split_sha256,
            "leaking_frames": len(found),
            "allowed": bool(found) and allow,
            "first": found[0][0] if found else None,
        }
