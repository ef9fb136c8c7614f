"""Video decoding for ``cache-teacher --images VIDEO``: PyAV against torchcodec, side by side.

    python bench/bench_video.py [--frames 300] [--size 360x640]

Writes an H.264 and an MPEG-4 Part 2 test video with PyAV, then decodes every frame to RGB uint8
with each decoder that imports and runs here, and prints frames per second and the ratio
torchcodec/PyAV. torchcodec loads the system's FFmpeg libraries; where they are missing it is
reported as such (why tiekd uses PyAV, whose wheels bundle FFmpeg: data/sources/video.py).
This is a script, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np


def write(path: Path, codec: str, frames: int, size: tuple[int, int]) -> None:
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 0] = (np.arange(width) + 3 * i) % 256
            image[..., 1] = i % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def pyav_rate(path: Path) -> float:
    start, n = time.perf_counter(), 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n / (time.perf_counter() - start)


def torchcodec_rate(path: Path) -> float | str:
    try:
        from torchcodec.decoders import VideoDecoder

        start = time.perf_counter()
        decoder = VideoDecoder(str(path))
        n = sum(1 for _ in decoder)
        return n / (time.perf_counter() - start)
    except (ImportError, RuntimeError, OSError) as e:  # not installed, or no system FFmpeg: report why
        return f"unavailable ({type(e).__name__}: {str(e).splitlines()[0][:80]})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="360x640")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        for codec in ("libx264", "mpeg4"):
            path = Path(folder) / f"{codec}.mp4"
            write(path, codec, args.frames, size)
            ours, theirs = pyav_rate(path), torchcodec_rate(path)
            ratio = f", torchcodec/PyAV {theirs / ours:.2f}" if isinstance(theirs, float) else ""
            shown = f"{theirs:.0f} frames/s" if isinstance(theirs, float) else theirs
            print(f"{codec} {args.size} x{args.frames}: PyAV {ours:.0f} frames/s, torchcodec {shown}{ratio}")


if __name__ == "__main__":
    main()
