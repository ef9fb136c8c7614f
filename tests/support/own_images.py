"""Tiny images, videos and description files of a lab's own data, made by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DESCRIPTION = """\
name: lab-rover
image_size: [{height}, {width}]
min_depth: 0.1
max_depth: 20.0
n_bins: 32
sigma: 0.3
train_crop: [{train_h}, {train_w}]
random_top: true
loss_top_row: 0
gt_scale: 1000
"""


def write_description(
    path: Path, *, height: int = 48, width: int = 64, train: tuple[int, int] = (32, 48), **extra
) -> Path:
    """A description file of 48x64 images (whole field of view) with 32x48 training crops."""
    text = DESCRIPTION.format(height=height, width=width, train_h=train[0], train_w=train[1])
    text += "".join(f"{key}: {value}\n" for key, value in extra.items())
    path.write_text(text)
    return path


def picture(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A random-ish uint8 (H, W, 3) picture, different for each seed."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 255, height)[:, None, None]
    return np.clip(rows + rng.integers(0, 60, (height, width, 3)), 0, 255).astype(np.uint8)


def write_images(folder: Path, seeds, *, size=(48, 64), suffix: str = ".png") -> list[Path]:
    """One picture per seed as ``folder/NNN<suffix>``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"{seed:03d}{suffix}"
        Image.fromarray(picture(seed, *size)).save(path)
        paths.append(path)
    return paths


def write_split(path: Path, images: list[Path], root: Path, gt: dict | None = None) -> Path:
    """A split file of ``images`` relative to ``root`` (GT names from ``gt`` where given)."""
    gt = gt or {}
    lines = [f"{p.relative_to(root)} {gt.get(p, 'None')} 500.0" for p in images]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_video(path: Path, n_frames: int, *, size=(48, 64), rate: int = 10) -> list[np.ndarray]:
    """A lossless-ish tiny video (PyAV, mpeg4 at top quality); returns the frames as written."""
    import av

    frames = [picture(100 + k, *size) for k in range(n_frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        stream.options = {"qscale": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return frames
