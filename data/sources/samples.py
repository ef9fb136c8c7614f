"""Torch datasets over image-source frames: the teacher's input, fitted to the store's size.

As :mod:`tiekd.data.datasets`, a sample carries its problem as text in ``error`` (a DataLoader
worker's exception would arrive as a multi-line traceback).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tiekd.data.datasets import DistillationSamples
from tiekd.data.images import read_rgb
from tiekd.data.sources.fit import content_sha256, fit_image
from tiekd.data.sources.listing import SourceFrame
from tiekd.data.sources.video import VideoReader
from tiekd.pipeline.errors import DataError


class FrameDecoder:
    """Decodes source frames, keeping one open reader per video (per process: made on first use)."""

    def __init__(self):
        self._videos: dict[str, VideoReader] = {}

    def __getstate__(self) -> dict:
        return {"_videos": {}}  # open containers stay in the process that opened them

    def decoded(self, frame: SourceFrame) -> np.ndarray:
        """The frame's pixels, uint8 (H, W, 3), refused when they are not the ones listed (hash)."""
        if frame.pts is None:
            image = read_rgb(frame.path)
        else:
            reader = self._videos.setdefault(frame.path, VideoReader(frame.path))
            image = reader.frame(frame.pts)
        if content_sha256(image) != frame.sha256:
            raise DataError(f"{frame.id} changed since it was listed (content hash differs); cache it again")
        return image

    def fitted(self, frame: SourceFrame, size: tuple[int, int], *, fit: str, place) -> np.ndarray:
        """The frame fitted to the store's ``size`` (:func:`~tiekd.data.sources.fit.fit_image`)."""
        return fit_image(self.decoded(frame), size, fit=fit, place=place, what=frame.id)


class SourceImages(Dataset):
    """Source frames fitted to the store's size, for running a teacher.

    Item: ``{"index": frame index, "image": uint8 (3, H, W), "error": "" or a message}``.
    """

    def __init__(self, frames: list[SourceFrame], indices: list[int], *, size: tuple[int, int], fit: str, place):
        self.frames = frames
        self.indices = indices
        self.size = tuple(size)
        self.fit = fit
        self.place = place
        self.decoder = FrameDecoder()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        index = self.indices[k]
        try:
            image = self.decoder.fitted(self.frames[index], self.size, fit=self.fit, place=self.place)
            error = ""
        except DataError as e:
            image, error = np.zeros((*self.size, 3), np.uint8), e.message
        return {
            "index": index,
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "error": error,
        }


class SourceSamples(DistillationSamples):
    """Training samples of image-source frames: the frame fitted as stage one fitted it (decoded from its
    file, or read from its packed split with ``packed``), with its teacher map (no GT), cut to the dataset's
    train region, then augmented as a labelled frame (:class:`~tiekd.data.datasets.DistillationSamples`:
    same crop, same (seed, epoch, frame) draws)."""

    def __init__(self, frames: list[SourceFrame], *, fit: str, **options):
        super().__init__(frames, Path("."), gt_root=None, **options)
        self.fit = fit
        self.decoder = FrameDecoder()

    def _cache_crops(self, record: SourceFrame) -> tuple[np.ndarray, None]:
        if self.packed is not None:
            return self.packed.training_region(record)
        dataset = self.dataset
        return self.decoder.fitted(record, dataset.cache_crop, fit=self.fit, place=dataset.cache_box), None
