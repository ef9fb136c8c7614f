"""What stage one runs over: a split's records, or the frames of ``--images`` sources.

Both kinds of frame carry the sample id as ``rgb``; source frames also carry what the store
records of them (``sources`` array, :class:`~tiekd.data.sources.listing.SourceFrame`).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from tiekd.data.datasets import CroppedImages
from tiekd.data.registry import get_dataset
from tiekd.data.sources.listing import frames_identity, list_sources
from tiekd.data.sources.samples import SourceImages
from tiekd.pipeline.files import file_sha256
from tiekd.pipeline.store.formats import split_group_name
from tiekd.stages.caching.config import CacheTeacherConfig


def frames_of(cfg: CacheTeacherConfig, *, map=map) -> list:
    """The records of ``--split``, or the listed frames of ``--images`` (each decoded once; ``map`` lists
    the parts of the listing, see :func:`~tiekd.data.sources.listing.list_sources`)."""
    if cfg.images:
        return list_sources(list(cfg.images), every=cfg.every, start=cfg.start, end=cfg.end, map=map)
    return get_dataset(cfg.dataset).read_split(cfg.split)


def teacher_inputs(cfg: CacheTeacherConfig, frames: list, indices: list[int]) -> Dataset:
    """The torch dataset of the teacher's input images of ``indices`` (uint8, the store's size)."""
    dataset = get_dataset(cfg.dataset)
    if cfg.images:
        return SourceImages(frames, indices, size=cfg.crop, fit=cfg.fit, place=dataset.cache_box)
    return CroppedImages(frames, cfg.data_root, indices, dataset=dataset, crop=cfg.crop)


def frames_sha256(cfg: CacheTeacherConfig, frames: list) -> str:
    """What identifies the frames: the split file's SHA-256, or one over the source frames' ids and
    content hashes and the fit (another image set, or another fit, makes other maps)."""
    return frames_identity(frames, cfg.fit) if cfg.images else file_sha256(cfg.split)


def group_name(cfg: CacheTeacherConfig) -> str:
    """The split group: --split-name, else the split file's stem, else the first input's name."""
    if cfg.split_name:
        return cfg.split_name
    return split_group_name(cfg.split if cfg.split else Path(cfg.images[0].rstrip("/")).name.split("*")[0] or "images")


def source_attrs(cfg: CacheTeacherConfig) -> dict:
    """The group attributes that say what its frames were made from."""
    if not cfg.images:
        return {"split_file": str(cfg.split)}
    return {
        "split_file": None,
        "sources": {"inputs": list(cfg.images), "every": cfg.every, "start": cfg.start, "end": cfg.end, "fit": cfg.fit},
    }
