"""Video frames decoded with PyAV (FFmpeg's libraries, bundled in its wheels).

PyAV was chosen over torchcodec: both install without touching the installed torch, but
torchcodec loads the system's FFmpeg libraries, which a machine may lack (it could not decode
here), while PyAV's wheels carry their own. Measured with ``bench/bench_video.py``: see README.

A frame is named by its index in decoding order from the stream's start and found again by its
presentation timestamp (``pts``): a reader seeks to the key frame before it and decodes forward,
and continues without seeking when frames are asked for in order (the teacher pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tiekd.pipeline.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
"""File name endings read as videos."""


def _open(path: Path):
    import av  # lazy: only video sources need it

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"video {path} cannot be opened ({type(e).__name__}: {e}); check the file") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path} holds no video stream")
    return container


def decoded_frames(
    path: Path, *, every: int = 1, start: float = 0.0, end: float | None = None
) -> Iterator[tuple[int, int, float, np.ndarray]]:
    """(index, pts, seconds, uint8 (H, W, 3)) of every ``every``-th frame whose time lies in
    [start, end) seconds, counted from the first frame in that range."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        taken, decoded = 0, 0
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            seconds = float(frame.time or 0.0)
            if seconds < start:
                continue
            if end is not None and seconds >= end:
                break
            if taken % every == 0:
                yield index, int(frame.pts), seconds, frame.to_ndarray(format="rgb24")
            taken += 1
        else:
            _require_whole(path, decoded, declared_frames(container, stream))
    except av.error.FFmpegError as e:
        raise DataError(f"video {path} cannot be decoded ({type(e).__name__}: {e}); re-encode or drop it") from None
    finally:
        container.close()


def declared_frames(container, stream) -> int | None:
    """The frames a video's container says it holds: its frame count (MP4, AVI), else its duration x frame rate
    (Matroska, WebM); None where it says neither."""
    if stream.frames:
        return int(stream.frames)
    if container.duration and stream.average_rate:
        return round(container.duration / 1e6 * float(stream.average_rate))
    return None


def _require_whole(path: Path, decoded: int, declared: int | None) -> None:
    """Refuse a video whose stream ends early: FFmpeg skips or stops at damaged data without an error, so a
    file cut short or damaged mid-way would give fewer frames without a word (one frame of slack: rounding)."""
    if declared is not None and decoded < declared - 1:
        raise DataError(
            f"video {path} decodes to {decoded} of the {declared} frames its container declares: it is cut short "
            "or damaged mid-way; re-encode or replace it (or drop it from --images)"
        )


class VideoReader:
    """Frames of one video by pts, decoded forward from the last one where possible."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._container = None
        self._frames = None
        self._last_pts: int | None = None

    def _seek(self, pts: int) -> None:
        if self._container is None:
            self._container = _open(self.path)
        stream = self._container.streams.video[0]
        self._container.seek(pts, stream=stream, backward=True, any_frame=False)
        self._frames = self._container.decode(stream)

    def frame(self, pts: int) -> np.ndarray:
        """The frame with presentation timestamp ``pts``, uint8 (H, W, 3)."""
        if self._last_pts is None or pts <= self._last_pts:
            self._seek(pts)
        for frame in self._frames:
            self._last_pts = int(frame.pts)
            if frame.pts == pts:
                return frame.to_ndarray(format="rgb24")
            if frame.pts > pts:
                break
        self._last_pts = None
        raise DataError(f"video {self.path} has no frame at pts {pts} any more; was the file replaced?")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._last_pts = None, None, None
