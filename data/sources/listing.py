"""The frames of stage one's image sources, listed once with what the store records of each.

An input (``cache-teacher --images``, repeatable) is one of:

- a folder: every image below it (recursive), in path order;
- a list file (``.txt``, ``.lst``): one image or video path a line, relative to the list's folder;
- a video file: its frames, every ``every``-th one in [start, end) seconds (:mod:`.video`);
- an image file, or a glob pattern (``**`` reaches into sub-folders) of images and videos.

Every frame is decoded once here to record its size and content hash (:func:`.fit.content_sha256`),
so the store says what each map was made from, and the leakage guard can compare contents.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tiekd.data.images import read_rgb
from tiekd.data.sources.fit import content_sha256
from tiekd.data.sources.video import VIDEO_SUFFIXES, decoded_frames
from tiekd.pipeline.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
"""File name endings read as images (folders and globs take these and videos)."""
LIST_SUFFIXES = (".txt", ".lst")
HASH_THREADS = 4
"""Images decoded at once while listing (PIL releases the GIL while decoding)."""
IMAGES_PER_PART = 256
"""Images listed by one task of a listing spread over a cluster (:func:`list_sources` ``map``)."""


@dataclass(frozen=True)
class SourceFrame:
    """One frame of an image source, as the store records it (array ``sources``, JSON a frame)."""

    id: str
    """Sample id in the store: the image's absolute path, or ``VIDEO#INDEX``."""
    path: str
    """Absolute path of the image or video file."""
    size: tuple[int, int]
    """(H, W) of the decoded image, before it is fitted to the store's size."""
    sha256: str
    """Content hash of the decoded pixels (:func:`~tiekd.data.sources.fit.content_sha256`)."""
    frame: int | None = None
    """Video frames: index in decoding order from the stream's start; None for images."""
    pts: int | None = None
    """Video frames: presentation timestamp in the stream's time base (how it is found again)."""
    seconds: float | None = None
    """Video frames: time of the frame in seconds."""

    @property
    def rgb(self) -> str:
        """The sample id, as :attr:`tiekd.data.records.Record.rgb` (what the store's ``ids`` hold)."""
        return self.id

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SourceFrame:
        values = json.loads(text)
        return cls(**(values | {"size": tuple(values["size"])}))


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _is(path: Path, kind: str) -> bool:
    """``path.is_file()`` (``kind`` "file") or ``is_dir()``; False where the name cannot be looked up at all
    (longer than the system allows, a symlink loop): no such file, as far as a user can tell."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except OSError:
        return False


def _shown(path) -> str:
    """A path for a message: whole, or its start and length where it is too long to read."""
    text = str(path)
    return text if len(text) <= 200 else f"{text[:120]}... ({len(text)} characters)"


def _media(paths) -> list[Path]:
    return sorted(p for p in paths if _is(p, "file") and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)


def _from_list(path: Path) -> list[Path]:
    """The files a list file names (relative to its folder); DataError naming the first missing one."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"list file {path} cannot be read ({e})") from None
    files = [(path.parent / line).resolve() for line in lines if line and not line.startswith("#")]
    missing = [f for f in files if not _is(f, "file")]
    if missing:
        first = _shown(missing[0])
        raise DataError(f"list file {path} names {len(missing)} missing file(s) (first: {first}); fix the list")
    return files


def input_files(text: str) -> list[Path]:
    """The image and video files of one input (see the module docstring), in order."""
    path = Path(text).expanduser()
    if _is(path, "dir"):
        files = _media(path.rglob("*"))
    elif _is(path, "file") and path.suffix.lower() in LIST_SUFFIXES:
        files = _from_list(path)
    elif _is(path, "file"):
        files = [path]
    elif any(c in text for c in "*?["):
        files = _media(Path(p) for p in glob.glob(text, recursive=True))
    else:
        raise DataError(f"--images {_shown(text)} is no folder, file or matching pattern; check the path")
    if not files:
        suffixes = ", ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
        raise DataError(f"--images {_shown(text)} holds no images or videos ({suffixes})")
    return [f.resolve() for f in files]


def _image_frame(path: Path) -> SourceFrame:
    image = read_rgb(path)
    return SourceFrame(id=str(path), path=str(path), size=image.shape[:2], sha256=content_sha256(image))


def _video_frames(path: Path, *, every: int, start: float, end: float | None) -> list[SourceFrame]:
    frames = []
    for index, pts, seconds, image in decoded_frames(path, every=every, start=start, end=end):
        frame = SourceFrame(id=f"{path}#{index}", path=str(path), size=image.shape[:2], sha256=content_sha256(image))
        frames.append(dataclasses.replace(frame, frame=index, pts=pts, seconds=seconds))
    if not frames and (start or end is not None):
        raise DataError(f"video {path} has no frame in the asked time range; check --start / --end")
    if not frames:
        raise DataError(f"video {path} decodes to no frame: it is cut short or damaged; re-encode or replace it")
    return frames


def listing_parts(inputs: list[str]) -> list[list[Path]]:
    """The files of ``inputs`` (a file named twice counts once) in parts listed one at a time, in order:
    each video alone, consecutive images up to :data:`IMAGES_PER_PART` together."""
    files = list(dict.fromkeys(f for text in inputs for f in input_files(text)))
    parts: list[list[Path]] = []
    for f in files:
        if _is_video(f) or not parts or _is_video(parts[-1][0]) or len(parts[-1]) == IMAGES_PER_PART:
            parts.append([f])
        else:
            parts[-1].append(f)
    return parts


def list_part(part: list[Path], *, every: int = 1, start: float = 0.0, end: float | None = None) -> list[SourceFrame]:
    """The frames of one part of :func:`listing_parts`, each decoded once to record it."""
    if _is_video(part[0]):
        return _video_frames(part[0], every=every, start=start, end=end)
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        return list(pool.map(_image_frame, part))


def list_sources(
    inputs: list[str], *, every: int = 1, start: float = 0.0, end: float | None = None, map=map
) -> list[SourceFrame]:
    """Every frame of ``inputs``, decoded once to record it. ``map(function, parts)`` lists the parts
    (the builtin here; a dask client's, gathered in order, spreads them over a cluster's workers)."""
    listed = map(functools.partial(list_part, every=every, start=start, end=end), listing_parts(inputs))
    return [frame for part in listed for frame in part]


def frames_identity(frames: list[SourceFrame], fit: str) -> str:
    """SHA-256 that identifies listed frames as a store group makes maps of them: their ids and content
    hashes and the fit (another image set, another order or another fit makes other maps). A teacher
    group and a packed split of image sources record it as ``split_sha256``."""
    digest = hashlib.sha256(f"fit={fit}\n".encode())
    for frame in frames:
        digest.update(f"{frame.id} {frame.sha256}\n".encode())
    return digest.hexdigest()
