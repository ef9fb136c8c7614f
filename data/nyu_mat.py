"""The official NYU Depth v2 labeled file, ``nyu_depth_v2_labeled.mat``, read lazily with h5py.

The file is MATLAB v7.3, i.e. HDF5 behind a 512-byte MATLAB header. MATLAB stores arrays
column-major, so h5py sees every axis reversed: MATLAB's ``images`` (480, 640, 3, N) uint8 reads as
(N, 3, 640, 480) and ``rawDepths`` (480, 640, N) single (metres) as (N, 640, 480). One frame is read
and transposed back at a time (the file is 2.8 GB): ``images[n].transpose(2, 1, 0)`` is the
(480, 640, 3) RGB image, ``rawDepths[n].T`` the (480, 640) depth. Split lines select frame n by the
number in their file name (``rgb_00045.jpg`` -> frame 45, 0-based), as the official test split
extracted by BTS numbers its files.

Frames are read as BTS's ``utils/extract_official_train_test_set_from_mat.py`` (cleinc/bts @ 5e3406b)
writes the official test set that BTS, AdaBins and TIE-KD evaluate on, so the .mat and the extracted
folders score the same pixels with the same values:

- ground truth from ``rawDepths`` (l.82), the sensor's depth with holes (0), not ``depths``, the
  in-painted dense one; ``rawDepths * 1000`` in float32, truncated to uint16 millimetres (l.57-58),
  then read back as millimetres / 1000 like the extracted PNG;
- the image with BTS's black border (l.60-62): only rows 7..473 and columns 7..631 are kept, the
  rest is 0. The extracted folders hold it as a JPEG (OpenCV, quality 95); the .mat gives the
  pixels before that compression, the one difference left between the two sources.

:func:`write_labeled_file` writes the same layout (header, transposition, MATLAB_class
attributes) for the sample data.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path, PurePosixPath

import h5py
import numpy as np

from tiekd.pipeline.errors import DataError

IMAGES = "images"
"""(N, 3, W, H) uint8 as h5py sees it."""
DEPTHS = "depths"
"""(N, W, H) float32 metres as h5py sees it, in-painted (dense): not read, only written for samples."""
RAW_DEPTHS = "rawDepths"
"""(N, W, H) float32 metres as h5py sees it, 0 = no measurement: the ground truth."""
FRAME_NUMBER = re.compile(r"(\d+)$")
"""The frame number at the end of a split path's stem: rgb_00045 / sync_depth_00045 -> 45."""
MAT_HEADER_BYTES = 512
"""MATLAB v7.3 files put a 512-byte user block before the HDF5 data; its first 128 bytes are the
MAT header: 116 bytes of text, 8 bytes subsystem offset, version 0x0200, endian mark "IM"."""
MAT_TEXT_BYTES = 116
MAT_VERSION = b"\x00\x02"
MAT_ENDIAN = b"IM"
MATLAB_V5_MARK = b"MATLAB 5.0 MAT-file"
"""How MATLAB v5/v6/v7 files (not HDF5, unreadable by h5py) begin."""

_OPEN: dict[tuple[str, int], h5py.File] = {}
"""Open files by (path, process id): a DataLoader worker opens its own handle after the fork."""


def is_labeled_file(root: Path) -> bool:
    """Whether --data-root / --gt-root names a file (the labeled .mat) rather than a folder."""
    return Path(root).is_file()


def _open(path: Path) -> h5py.File:
    key = (str(path), os.getpid())
    if key not in _OPEN:
        try:
            _OPEN[key] = h5py.File(path, "r")
        except OSError as e:  # HDF5's own words: "truncated file: eof = ..., stored_eof = ..."
            reason = str(e).partition("(")[2].rstrip(")") or str(e)
            raise DataError(
                f"{path} cannot be read as HDF5 ({reason}); the file is damaged or incomplete (an interrupted "
                "download?): download nyu_depth_v2_labeled.mat again"
            ) from e
    return _OPEN[key]


def check_labeled_file(path: Path, *, flag: str) -> Path:
    """Refuse a file that is not a v7.3 labeled file with ``images`` and ``depths`` of one length."""
    if not h5py.is_hdf5(path):
        with open(path, "rb") as f:
            start = f.read(len(MATLAB_V5_MARK))
        kind = "a MATLAB v5/v7 file" if start == MATLAB_V5_MARK else "not an HDF5 (MATLAB v7.3) file"
        raise DataError(
            f"{flag} {path} is {kind}; h5py reads only MATLAB v7.3: use the official nyu_depth_v2_labeled.mat "
            "or re-save it in MATLAB with save(..., '-v7.3')"
        )
    labeled = _open(path)
    if IMAGES not in labeled or RAW_DEPTHS not in labeled:
        raise DataError(
            f"{flag} {path} holds no '{IMAGES}' and '{RAW_DEPTHS}' arrays; pass nyu_depth_v2_labeled.mat "
            "(a tiekd sample written before rawDepths: write it again)"
        )
    images, depths = labeled[IMAGES], labeled[RAW_DEPTHS]
    if images.ndim != 4 or depths.ndim != 3 or images.shape[0] != depths.shape[0] or images.shape[1] != 3:
        raise DataError(
            f"{flag} {path}: images {images.shape} and rawDepths {depths.shape} are not (N, 3, W, H) and "
            "(N, W, H) as h5py reads nyu_depth_v2_labeled.mat"
        )
    return Path(path)


def frame_index(path: Path, relative: str, *, line: int) -> int:
    """The frame of the labeled file a split path selects (``.../rgb_00045.jpg`` -> 45)."""
    match = FRAME_NUMBER.search(PurePosixPath(relative).stem)
    count = _open(path)[IMAGES].shape[0]
    if match is None:
        raise DataError(f"split line {line}: {relative} has no frame number to select from {path}")
    index = int(match[1])
    if index >= count:
        raise DataError(
            f"split line {line}: {relative} selects frame {index} but {path} holds {count} frames (0..{count - 1})"
        )
    return index


def read_labeled_image(path: Path, relative: str, *, line: int, kept: tuple[int, int, int, int]) -> np.ndarray:
    """Frame of the labeled file as uint8 (H, W, 3) RGB, black outside ``kept`` = (top, bottom, left,
    right), the region BTS's extraction keeps."""
    frame = _read_frame(path, IMAGES, frame_index(path, relative, line=line))
    return with_black_border(np.asarray(frame, dtype=np.uint8).transpose(2, 1, 0), kept=kept)


def _read_frame(path: Path, name: str, index: int) -> np.ndarray:
    """Frame ``index`` of array ``name`` of the labeled file; a damaged one is one line."""
    try:
        return _open(path)[name][index]
    except OSError as e:
        raise DataError(
            f"{path}: frame {index} of '{name}' cannot be read ({e}); the file is damaged: download "
            "nyu_depth_v2_labeled.mat again"
        ) from e


def with_black_border(image: np.ndarray, *, kept: tuple[int, int, int, int]) -> np.ndarray:
    """A copy of an (H, W, 3) image that is 0 outside rows [top, bottom) and columns [left, right)."""
    top, bottom, left, right = kept
    out = np.zeros_like(image)
    out[top:bottom, left:right] = image[top:bottom, left:right]
    return out


def read_labeled_depth(path: Path, relative: str, *, line: int, scale: float) -> np.ndarray:
    """Raw depth of a frame of the labeled file as float32 (H, W) metres (0 = no measurement), at
    the resolution of the extracted PNG: truncated to 1 / ``scale`` metres (millimetres: 1000)."""
    frame = _read_frame(path, RAW_DEPTHS, frame_index(path, relative, line=line))
    values = depth_png_values(np.asarray(frame, dtype=np.float32).T, scale=scale)
    return values.astype(np.float32) / np.float32(scale)


def depth_png_values(depth: np.ndarray, *, scale: float) -> np.ndarray:
    """float32 (H, W) metres -> the uint16 values BTS's extraction writes: the float32 product with
    ``scale``, truncated toward zero (``astype``, l.57-58), so 1.9999 m is 1999 mm; 0 stays 0."""
    return (np.asarray(depth, dtype=np.float32) * np.float32(scale)).astype(np.uint16)


def _mat_header() -> bytes:
    """The 128-byte MAT header MATLAB writes at the start of a v7.3 file."""
    created = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0))
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created} HDF5 schema 1.00 .".encode()
    return text.ljust(MAT_TEXT_BYTES) + b"\x00" * 8 + MAT_VERSION + MAT_ENDIAN


def write_labeled_file(path: Path, images: np.ndarray, depths: np.ndarray, raw_depths: np.ndarray) -> None:
    """Write images uint8 (N, H, W, 3), in-painted depths and raw depths float32 (N, H, W) metres
    (raw: 0 = no measurement) in the labeled file's MATLAB v7.3 layout: a MAT header in the user
    block, arrays transposed to MATLAB's axis order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = _OPEN.pop((str(path), os.getpid()), None)
    if stale is not None:  # a reader of an earlier file at this path would block the rewrite
        stale.close()
    with h5py.File(path, "w", userblock_size=MAT_HEADER_BYTES) as f:
        f.create_dataset(IMAGES, data=np.ascontiguousarray(images.transpose(0, 3, 2, 1)), chunks=True)
        f[IMAGES].attrs["MATLAB_class"] = np.bytes_("uint8")
        for name, array in ((DEPTHS, depths), (RAW_DEPTHS, raw_depths)):
            f.create_dataset(name, data=np.ascontiguousarray(array.transpose(0, 2, 1), dtype=np.float32), chunks=True)
            f[name].attrs["MATLAB_class"] = np.bytes_("single")
    with open(path, "r+b") as f:
        f.write(_mat_header())
