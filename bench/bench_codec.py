"""Lossless codecs for the packed RGB (pipeline/store/inputs.py), side by side in one run.

    python bench/bench_codec.py [--frames 8] [--passes 5]

Bytes per frame and decode time of one 352x1216 KB-cropped KITTI frame in each codec, against the
authors' PNG file (the whole 375x1242 image, decoded by PIL as the loader does). Frames are the
procedural KITTI-like streets of ``tiekd sample-data``: real KITTI photos are not available here,
and they hold more texture and sensor noise, so every codec's bytes grow on them (ratios between
codecs move less). Decoding is single-threaded; a time is the median over frames of the best of
``--passes`` decodes. Every codec is checked to give the frame back bit for bit.
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from tiekd.data.kitti import kb_crop, read_split, rgb_path
from tiekd.data.sample.kitti import write_sample_dataset

ZSTD_LEVEL = 9
"""The level the packed store writes the GT with (inputs.GT_CODECS), and its images until format 2."""


def planar(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (3, H, W): each channel's bytes together (the 'shuffle' of an RGB frame)."""
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


def _unplanar(planes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(planes.transpose(1, 2, 0))


def _zstd(data: np.ndarray) -> bytes:
    return imagecodecs.zstd_encode(np.ascontiguousarray(data).tobytes(), level=ZSTD_LEVEL)


def _unzstd(encoded: bytes, shape, dtype=np.uint8) -> np.ndarray:
    return np.frombuffer(imagecodecs.zstd_decode(encoded), dtype).reshape(shape)


def _blosc(data: np.ndarray, compressor: str, level: int) -> bytes:
    return imagecodecs.blosc_encode(data.tobytes(), level=level, compressor=compressor, shuffle=0, typesize=1,
                                    numthreads=1)  # fmt: skip


def _unblosc(encoded: bytes, shape) -> np.ndarray:
    return np.frombuffer(imagecodecs.blosc_decode(encoded, numthreads=1), np.uint8).reshape(shape)


def codecs(shape) -> dict:
    """Name -> (encode(frame) -> bytes, decode(bytes) -> frame) of every codec compared."""
    height, width, _ = shape
    planes = (3, height, width)
    return {
        "blosc LZ4HC 9 (the packed store)": (lambda f: _blosc(f, "lz4hc", 9), lambda b: _unblosc(b, shape)),
        "blosc LZ4 5": (lambda f: _blosc(f, "lz4", 5), lambda b: _unblosc(b, shape)),
        "zstd 9 (packed format 1)": (_zstd, lambda b: _unzstd(b, shape)),
        "zstd, planar (shuffle)": (lambda f: _zstd(planar(f)), lambda b: _unplanar(_unzstd(b, planes))),
        "zstd, row delta": (lambda f: _zstd(imagecodecs.delta_encode(f, axis=1)),
                            lambda b: imagecodecs.delta_decode(_unzstd(b, shape).copy(), axis=1)),
        "zstd, planar plane predictor": (
            lambda f: _zstd(imagecodecs.delta_encode(imagecodecs.delta_encode(planar(f), axis=2), axis=1)),
            lambda b: _unplanar(imagecodecs.delta_decode(imagecodecs.delta_decode(_unzstd(b, planes).copy(), axis=1), axis=2)),
        ),
        "PNG in zarr (imagecodecs)": (imagecodecs.png_encode, imagecodecs.png_decode),
        "WebP lossless": (lambda f: imagecodecs.webp_encode(f, lossless=True), imagecodecs.webp_decode),
        "JPEG-XL lossless (effort 3)": (lambda f: imagecodecs.jpegxl_encode(f, lossless=True, effort=3),
                                        imagecodecs.jpegxl_decode),
        "lz4": (lambda f: imagecodecs.lz4_encode(f.tobytes()), lambda b: np.frombuffer(imagecodecs.lz4_decode(b), np.uint8).reshape(shape)),
    }  # fmt: skip


def best_time(function, passes: int) -> float:
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def authors_png(paths: list[Path], passes: int) -> tuple[float, float]:
    """Bytes and decode seconds (median of frames) of the authors' PNG files, decoded as the loader does."""
    sizes = [p.stat().st_size for p in paths]
    times = [
        best_time(lambda p=p: np.asarray(Image.open(io.BytesIO(p.read_bytes())).convert("RGB")), passes) for p in paths
    ]
    return float(np.median(sizes)), float(np.median(times))


def measure(frames: list[np.ndarray], passes: int) -> dict[str, tuple[float, float]]:
    """Codec -> (median bytes, median decode seconds) per frame; each checked lossless."""
    results = {}
    for name, (encode, decode) in codecs(frames[0].shape).items():
        sizes, times = [], []
        for frame in frames:
            encoded = encode(frame)
            if not np.array_equal(decode(encoded), frame):
                raise AssertionError(f"{name} is not lossless")
            sizes.append(len(encoded))
            times.append(best_time(lambda e=encoded, d=decode: d(e), passes))
        results[name] = (float(np.median(sizes)), float(np.median(times)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sample = write_sample_dataset(Path(tmp), n_train=args.frames, n_test=2, seed=0)
        paths = [rgb_path(sample.data_root, r) for r in read_split(sample.train_split)]
        png_bytes, png_seconds = authors_png(paths, args.passes)
        frames = [np.ascontiguousarray(kb_crop(np.asarray(Image.open(p).convert("RGB")))) for p in paths]
        results = measure(frames, args.passes)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, imagecodecs {imagecodecs.__version__}; "
          f"{len(frames)} procedural KITTI-like frames (tiekd sample-data), 352x1216 KB crop; one thread")  # fmt: skip
    print(f"{'codec':32} {'kB/frame':>9} {'x PNG bytes':>12} {'decode ms':>10} {'PNG time / this':>16}")
    print(
        f"{'authors PNG file (PIL, 375x1242)':32} {png_bytes / 1e3:9.1f} {1:12.2f} {png_seconds * 1e3:10.2f} {1:16.1f}"
    )
    for name, (size, seconds) in results.items():
        print(
            f"{name:32} {size / 1e3:9.1f} {size / png_bytes:12.2f} {seconds * 1e3:10.2f} {png_seconds / seconds:16.1f}"
        )


if __name__ == "__main__":
    main()
