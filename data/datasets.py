"""Torch datasets over split records.

Errors in a DataLoader worker would reach the main process wrapped in a multi-line traceback, so
a sample carries its problem as text in ``error`` and the stage raises it there as one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tiekd.data.kitti import KB_HEIGHT, KB_WIDTH, Record, kb_crop, read_rgb, rgb_path
from tiekd.pipeline.errors import DataError


class CroppedImages(Dataset):
    """KB-cropped RGB images of some records, for running a teacher.

    Item: ``{"index": frame index, "image": uint8 (3, H, W), "error": "" or a message}``.
    Images stay uint8 until they reach the device: a quarter of the bytes to copy.
    """

    def __init__(self, records: list[Record], data_root: Path, indices: list[int], *,
                 crop: tuple[int, int] = (KB_HEIGHT, KB_WIDTH)):
        self.records = records
        self.data_root = Path(data_root)
        self.indices = indices
        self.crop = crop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        index = self.indices[k]
        try:
            image = kb_crop(read_rgb(rgb_path(self.data_root, self.records[index])), crop=self.crop)
            error = ""
        except DataError as e:
            image, error = np.zeros((*self.crop, 3), np.uint8), f"{self.records[index].rgb}: {e.message}"
        return {"index": index, "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "error": error}


def raise_batch_errors(batch: dict) -> None:
    """Raise the first problem a batch carries as a one-line DataError."""
    for error in batch["error"]:
        if error:
            raise DataError(error)
