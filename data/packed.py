"""A split's inputs packed into a store (:mod:`tiekd.pipeline.store.inputs`): packing a record, and
reading it back as the datasets read the files.

A packed frame holds exactly what :class:`~tiekd.data.datasets.DistillationSamples` and
:class:`~tiekd.data.datasets.EvaluationSamples` take from the files: the image at the cache crop
(uint8), the GT at the cache crop as the source PNG's integer values, and the full image size and
crop box the evaluation's crop masks need. Reading it back gives the same arrays bit for bit, so a
run from the packed store equals the run from the files step for step.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tiekd.data import nyu_mat
from tiekd.data.description import DatasetDescription
from tiekd.data.records import Record
from tiekd.pipeline.errors import DataError, StoreError
from tiekd.pipeline.files import file_sha256
from tiekd.pipeline.store.inputs import PackedFrame, PackedInputs, inputs_location


def _source_sha256(root: Path, path: Path, decoded: np.ndarray) -> str:
    """SHA-256 of a record's source file ``path`` (under ``root``); of the decoded frame for NYU's
    labeled .mat (``root`` itself, one file of all frames)."""
    if nyu_mat.is_labeled_file(root):
        return hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest()
    return file_sha256(path)


def gt_values(gt: np.ndarray, scale: float, *, record: Record) -> np.ndarray:
    """float32 GT metres -> the uint16 values it was read from (``value / scale``), refused where
    they would not read back bit for bit."""
    values = np.rint(gt.astype(np.float64) * scale)
    if values.min(initial=0) < 0 or values.max(initial=0) > np.iinfo(np.uint16).max:
        raise DataError(
            f"GT {record.gt}: depth outside what a uint16 at {scale:g} per metre holds; it cannot be packed"
        )
    values = values.astype(np.uint16)
    if not np.array_equal(values.astype(np.float32) / np.float32(scale), gt):
        raise DataError(f"GT {record.gt} is not a whole number of 1/{scale:g} m; it cannot be packed losslessly")
    return values


def pack_record(dataset: DatasetDescription, data_root: Path, gt_root: Path | None, record: Record) -> PackedFrame:
    """A record's inputs read from the files as the datasets read them, ready to store."""
    full = dataset.read_full_image(data_root, record)
    gt = dataset.read_aligned_gt(gt_root, record, full.shape[:2]) if gt_root is not None else None
    cropped_gt = np.zeros(dataset.cache_crop, np.float32) if gt is None else dataset.crop_to_cache(gt)
    gt_file = dataset.gt_path(gt_root, record) if gt is not None else None
    return PackedFrame(
        image=dataset.crop_image_to_cache(full, record),
        gt=gt_values(cropped_gt, dataset.gt_scale, record=record),
        full_size=tuple(full.shape[:2]),
        box=dataset.cache_crop_box(full.shape[:2]),
        image_sha256=_source_sha256(data_root, data_root / record.rgb, full),
        gt_sha256=_source_sha256(gt_root, gt_file, gt) if gt_file is not None else "",
    )


def source_files(dataset: DatasetDescription, data_root: Path, gt_root: Path | None, record: Record) -> list[Path]:
    """The files a record is packed from, image first (NYU's labeled .mat: that one file of all frames)."""
    files = [data_root if nyu_mat.is_labeled_file(data_root) else data_root / record.rgb]
    if gt_root is not None and record.gt is not None:
        if nyu_mat.is_labeled_file(gt_root):
            files.append(gt_root)
        else:
            files.append(dataset.gt_path(gt_root, record))
    return files


def source_hashes(
    dataset: DatasetDescription, data_root: Path, gt_root: Path | None, record: Record
) -> tuple[str, str]:
    """(image, GT) SHA-256 of a record's sources as :func:`pack_record` records them, hashing the files
    without decoding them (NYU's labeled .mat: its frames are decoded, as packing hashes them)."""
    if nyu_mat.is_labeled_file(data_root) or (gt_root is not None and nyu_mat.is_labeled_file(gt_root)):
        frame = pack_record(dataset, data_root, gt_root, record)
        return frame.image_sha256, frame.gt_sha256
    files = source_files(dataset, data_root, gt_root, record)
    return file_sha256(files[0]), file_sha256(files[1]) if len(files) > 1 else ""


class PackedSource:
    """The packed inputs of a split as the datasets read them, by record.

    Holds only the store reference until first use, so each DataLoader worker opens the store
    itself (never before a fork). ``with_gt``: whether training samples carry the GT.
    """

    def __init__(self, ref: tuple[str, str], *, with_gt: bool):
        self.ref = ref
        self.with_gt = with_gt
        self._inputs = None
        self._watched = None
        """The split as first checked by :meth:`require_unchanged` (in the process that checks, never a worker)."""

    @property
    def inputs(self) -> PackedInputs:
        if self._inputs is None:
            self._inputs = PackedInputs.open(*self.ref)
        return self._inputs

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_inputs": None, "_watched": None}

    @property
    def location(self) -> str:
        """``STORE/_inputs/<split>``, as messages name it."""
        return inputs_location(*self.ref)

    def require_unchanged(self) -> None:
        """Refuse, in one line, a packed split removed or packed again since this method was first called:
        a run calls it when it starts and before each step or result, as it does for its teacher groups."""
        if self._watched is None:
            self._watched = PackedInputs.open(*self.ref)
        self._watched.require_unchanged()

    def _index(self, record: Record) -> int:
        try:
            return self.inputs.index[record.rgb]
        except KeyError:
            raise StoreError(f"{self.inputs.location} has no packed frame for {record.rgb}") from None

    def training_region(self, record: Record) -> tuple[np.ndarray, np.ndarray | None]:
        """Image uint8 (H, W, 3) and, with ``with_gt``, GT float32 (H, W) metres at the cache crop."""
        i = self._index(record)
        gt = self.inputs.gt(i) if self.with_gt else None
        return self.inputs.image(i), gt

    def evaluation(self, record: Record) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image, GT at the cache crop, full image size and the crop's (top, left), as EvaluationSamples."""
        i = self._index(record)
        full_size, box = self.inputs.full_size[i], self.inputs.box[i]
        return (
            self.inputs.image(i),
            self.inputs.gt(i),
            (int(full_size[0]), int(full_size[1])),
            (int(box[0]), int(box[1])),
        )


def check_packed(path: str, split: str, records: list[Record], *, dataset: DatasetDescription, with_gt: bool,
                 what: str) -> tuple[str, str]:  # fmt: skip
    """Refuse a packed split that does not hold ``records`` as the split file names them; returns its
    reference (store, split) for :class:`PackedSource`."""
    inputs = PackedInputs.open(path, split)
    if inputs.attrs.get("dataset") != dataset.name:
        raise StoreError(f"{inputs.location} holds {inputs.attrs.get('dataset')} inputs, this run is --dataset "
                         f"{dataset.name}; pass --dataset {inputs.attrs.get('dataset')} or pack this dataset")  # fmt: skip
    if inputs.gt_scale != dataset.gt_scale:
        raise StoreError(f"{inputs.location} records GT scale {inputs.gt_scale:g}, but {dataset.name} GT is "
                         f"{dataset.gt_scale:g} per metre: its record was edited; pack the split again with "
                         "--overwrite")  # fmt: skip
    inputs.require_packed([r.rgb for r in records], what=what)
    for record in records:
        if inputs.gt_ids[inputs.index[record.rgb]] != (record.gt or ""):
            raise StoreError(f"{inputs.location} packed {record.rgb} with GT {inputs.gt_ids[inputs.index[record.rgb]]!r}, "
                             f"the split says {record.gt!r}; pack this split again with --overwrite")  # fmt: skip
    if with_gt and not inputs.attrs.get("with_gt"):
        raise StoreError(f"{inputs.location} was packed without --gt-root; pack it again with --gt-root --overwrite")
    return path, split
