"""``tiekd cache pack``: pack a split's images and ground truth into a store (also
``cache-teacher --with-inputs``), so nodes train, evaluate and explain without the dataset's files;
or image sources (``--images``: folders, globs, list files, videos), each frame fitted as stage one
fits it (:mod:`tiekd.data.sources.packed`), so nodes train on them without the source files.

Layout and integrity: :mod:`tiekd.pipeline.store.inputs`. Resumable as the teacher pass: frames are
marked done after they are stored, a killed run loses at most one store shard's frames, and running
it again continues; ``--shard I/N`` processes fill disjoint store shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tiekd.data.packed import pack_record, source_files, source_hashes
from tiekd.data.records import Record
from tiekd.data.registry import DEFAULT_DATASET, get_dataset
from tiekd.data.sources.fit import FITS, check_fit
from tiekd.data.sources.packed import packed_frame
from tiekd.data.sources.samples import FrameDecoder
from tiekd.pipeline.errors import ConfigError, StoreError
from tiekd.pipeline.store.cache import FRAMES_PER_SHARD, open_root, plain_path, shard_frames
from tiekd.pipeline.store.formats import INPUTS_GROUP
from tiekd.pipeline.store.inputs import InputsWriter, PackedFrame
from tiekd.pipeline.store.lease import check_held, shard_lease
from tiekd.stages.caching.config import check_split_files
from tiekd.stages.caching.sources import frames_of, frames_sha256, group_name, source_attrs
from tiekd.stages.caching.worker import store_errors
from tiekd.stages.runtime import Rate, progress


@dataclass
class PackConfig:
    """Options of ``tiekd cache pack``, one field per flag."""

    out: str
    """Store path to pack into (beside its teacher groups)."""
    data_root: Path | None = None
    """Root of the split's images (KITTI raw; NYU: the sync folders or the labeled .mat)."""
    split: Path | None = None
    """Split file, one 'RGB GT|None FOCAL' record a line."""
    gt_root: Path | None = None
    """Root of the split's ground-truth depth (KITTI annotated depth; NYU: the sync folders or the .mat); packed with
    the images (needed to train supervised, validate, evaluate and explain from the store)."""
    split_name: str | None = None
    """Split group name in the store; default the split file's stem."""
    shard: tuple[int, int] = (0, 1)
    """Fill store shards I, I+N, I+2N, ... of the split (N processes). (I, N); (0, 1) = all."""
    overwrite: bool = False
    """Replace an existing packed split made differently."""
    frames_per_shard: int = FRAMES_PER_SHARD
    """Frames per shard file of a new packed split (a resumed one keeps its own)."""
    dataset: str = DEFAULT_DATASET
    """Dataset layout and protocol; crops, depth range, bins and sigma follow it unless given."""
    images: tuple[str, ...] = ()
    """Images instead of a split: a folder (recursive), a glob, a list file or a video (repeatable)."""
    every: int = 1
    """Take every N-th frame of a video."""
    start: float = 0.0
    """Take video frames from this time (seconds)."""
    end: float | None = None
    """Take video frames before this time (seconds) [default: to the end]."""
    fit: str = "whole"
    """How an image becomes a map of the dataset's size: whole (resized, refused if its shape differs) or crop (the
    largest region of the map's shape, placed as the dataset's crop, resized)."""


@dataclass
class PackSummary:
    location: str
    frames_total: int
    frames_written: int
    seconds: float
    complete: bool


def check_choice(cfg: PackConfig) -> None:
    """Refuse, before anything is read, both or neither of --split and --images, or GT for images."""
    if bool(cfg.images) == (cfg.split is not None):
        raise ConfigError("give either --split (with --data-root) or --images, not both or neither")
    if cfg.images and cfg.gt_root is not None:
        raise ConfigError("--gt-root belongs to --split; image sources carry no GT")
    if cfg.fit not in FITS:
        raise ConfigError(f"--fit {cfg.fit!r} is not one of {', '.join(FITS)}")


def check_files(cfg: PackConfig, records: list) -> None:
    """Fail before the store is touched on missing roots or files, or images the fit cannot take."""
    if cfg.images:
        for frame in records:
            check_fit(frame.size, get_dataset(cfg.dataset).cache_crop, fit=cfg.fit, what=frame.id)
    else:
        check_split_files(cfg, records)
    if not 0 <= cfg.shard[0] < cfg.shard[1]:
        raise ConfigError(f"--shard {cfg.shard[0]}/{cfg.shard[1]}: expected I/N with 0 <= I < N")
    if cfg.overwrite and cfg.shard[1] > 1:
        raise ConfigError("--overwrite with --shard would let every process delete the others' work; "
                          "overwrite once with a single process, then start the shards")  # fmt: skip


def _image_attr(cfg: PackConfig) -> str:
    dataset = get_dataset(cfg.dataset)
    if cfg.images:
        return f"each source frame fitted ({cfg.fit}) to {dataset.cache_crop[0]}x{dataset.cache_crop[1]}, uint8 RGB"
    return f"{dataset.cache_crop_title} of each {dataset.title} image, uint8 RGB"


def open_inputs_writer(cfg: PackConfig, records: list, *, fingerprint: str | None = None) -> InputsWriter:
    """The packed split opened for writing; ``fingerprint`` (:func:`sources_fingerprint`) is recorded in a
    new one, and checked against a resumed one (:func:`check_sources`). Image sources are identified by
    their frames (ids, content hashes, fit), as their teacher group is."""
    dataset = get_dataset(cfg.dataset)
    attrs = source_attrs(cfg) | {
        "dataset": dataset.name,
        "split_sha256": frames_sha256(cfg, records),
        "crop": list(dataset.cache_crop),
        "gt_scale": dataset.gt_scale,
        "with_gt": cfg.gt_root is not None,
        "image": _image_attr(cfg),
    } | ({SOURCES_FINGERPRINT: fingerprint} if fingerprint else {})
    writer = InputsWriter.create_or_resume(
        cfg.out, split=group_name(cfg), ids=[r.rgb for r in records],
        gt_ids=[""] * len(records) if cfg.images else [r.gt or "" for r in records], attrs=attrs,
        overwrite=cfg.overwrite, frames_per_shard=cfg.frames_per_shard,
    )  # fmt: skip
    if fingerprint:
        check_sources(cfg, writer, records, fingerprint)
    return writer


SOURCES_FINGERPRINT = "sources_fingerprint"
"""Attribute of a packed split: :func:`sources_fingerprint` of its sources when it was created."""


def sources_fingerprint(cfg: PackConfig, records: list[Record]) -> str | None:
    """SHA-256 of the path, size and modification time of every source file of ``records``: cheap (no file
    is read), and changed by any edit of an image or GT file (also by a copy that does not keep times).
    None for image sources: every frame's content hash is checked as it is decoded for packing."""
    if cfg.images:
        return None
    dataset, digest = get_dataset(cfg.dataset), hashlib.sha256()
    files = (path for r in records for path in source_files(dataset, cfg.data_root, cfg.gt_root, r))
    for path in dict.fromkeys(files):
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check_sources(cfg: PackConfig, writer: InputsWriter, records: list[Record], fingerprint: str) -> None:
    """Refuse, in one line, to resume a packed split whose packed frames' source files changed since they
    were packed (a resume would mix frames from before and after the edit). Where the sources' fingerprint
    is the recorded one nothing is read; else the packed frames' sources are hashed again and compared
    with the SHA-256 recorded with each frame (a touched or copied file that is unchanged passes)."""
    group = open_root(plain_path(cfg.out), mode="r")[f"{INPUTS_GROUP}/{group_name(cfg)}"]
    if group.attrs.get(SOURCES_FINGERPRINT) == fingerprint:
        return
    dataset, done = get_dataset(cfg.dataset), group["done"][:]
    recorded = group["image_sha256"][:], group["gt_sha256"][:]
    for i in np.flatnonzero(done).tolist():
        image, gt = source_hashes(dataset, cfg.data_root, cfg.gt_root, records[i])
        if image != recorded[0][i] or (cfg.gt_root is not None and gt != recorded[1][i]):
            raise StoreError(
                f"{writer.location}: the source files of packed frame {i} ({records[i].rgb}) changed since it was "
                "packed, and resuming would mix frames from before and after the change; pack the split again "
                "with `tiekd cache pack --overwrite`"
            )


def run(cfg: PackConfig, records: list | None = None) -> PackSummary:
    """Pack (or continue packing) the frames of ``cfg.shard`` into ``out/_inputs/split``; ``records``: the
    split's records or the listed source frames, where the caller has them (else read or listed here)."""
    check_choice(cfg)
    records = frames_of(cfg) if records is None else records
    check_files(cfg, records)
    writer = open_inputs_writer(cfg, records, fingerprint=sources_fingerprint(cfg, records))
    todo = writer.pending(shard_frames(len(records), *cfg.shard, frames_per_shard=writer.frames_per_shard))
    rate = Rate()
    with progress(len(todo), f"packing {writer.location}") as bar:

        def on_batch(n: int) -> None:
            rate.add(n)
            bar.update(n, f"{rate.per_second:.1f} frames/s")

        pack_frames(cfg, writer, records, todo, on_batch=on_batch)
    return PackSummary(writer.location, len(records), rate.count, rate.seconds, writer.finish())


def _packer(cfg: PackConfig) -> Callable[[object], PackedFrame]:
    """record or source frame -> its PackedFrame, read from the files."""
    dataset = get_dataset(cfg.dataset)
    if cfg.images:
        decoder = FrameDecoder()
        return lambda frame: packed_frame(decoder, frame, dataset=dataset, fit=cfg.fit)
    return lambda record: pack_record(dataset, cfg.data_root, cfg.gt_root, record)


def pack_frames(cfg: PackConfig, writer: InputsWriter, records: list, frames: list[int], *,
                on_batch: Callable[[int], None] = lambda n: None) -> int:  # fmt: skip
    """Pack ``frames`` (sorted indices into ``records``), one store shard's worth per write; returns
    how many. Each write marks its frames done, so a killed run loses at most one write."""
    packed = _packer(cfg)
    shards = {frame // writer.frames_per_shard for frame in frames}
    with store_errors(writer.location), shard_lease(writer.location, shards):
        for start in range(0, len(frames), writer.frames_per_shard):
            indices = frames[start : start + writer.frames_per_shard]
            check_held()  # a run whose S3 lease was taken over stops before writing
            writer.write(indices, [packed(records[i]) for i in indices])
            on_batch(len(indices))
    return len(frames)


def pack_store_shard(shard: int, cfg: PackConfig, records: list) -> int:
    """Pack the missing frames of store shard ``shard`` (a dask task of ``cache-teacher --cluster
    --with-inputs``); idempotent as :func:`tiekd.stages.caching.worker.cache_shard`."""
    writer = open_inputs_writer(dataclasses.replace(cfg, overwrite=False), records)
    fps = writer.frames_per_shard
    return pack_frames(
        cfg, writer, records, writer.pending(list(range(shard * fps, min((shard + 1) * fps, len(records)))))
    )


def report(summary: PackSummary) -> str:
    state = "complete" if summary.complete else "incomplete (other shards still missing)"
    return (
        f"packed {summary.frames_written} frames in {summary.seconds:.1f} s into {summary.location}\n"
        f"packed split {state}: {summary.frames_total} frames"
    )


def inputs_config(cfg) -> PackConfig:
    """The packing of ``cache-teacher --with-inputs`` (a CacheTeacherConfig): same split or image sources,
    store, shard, shard size and dataset."""
    return PackConfig(
        data_root=cfg.data_root, split=cfg.split, out=cfg.out, gt_root=cfg.gt_root, split_name=cfg.split_name,
        shard=cfg.shard, overwrite=cfg.overwrite, frames_per_shard=cfg.frames_per_shard, dataset=cfg.dataset,
        images=cfg.images, every=cfg.every, start=cfg.start, end=cfg.end, fit=cfg.fit,
    )  # fmt: skip


def run_on_cluster(cfg: PackConfig, client, records: list) -> PackSummary:
    """Pack on a dask cluster: the store shards still missing frames (among ``cfg.shard``'s) mapped
    as tasks of :func:`pack_store_shard`, retried as the teacher's shards are; ``records`` as listed once
    by the client (sent once, as the teacher pass sends them)."""
    from distributed import as_completed  # lazy, as the cluster itself

    from tiekd.stages.caching.cluster import sent_once

    writer = open_inputs_writer(cfg, records, fingerprint=sources_fingerprint(cfg, records))  # once, before the tasks
    fps = writer.frames_per_shard
    shards = sorted({i // fps for i in writer.pending(shard_frames(len(records), *cfg.shard, frames_per_shard=fps))})
    rate = Rate()
    sent = sent_once(client, records)
    futures = client.map(pack_store_shard, shards, cfg=dataclasses.replace(cfg, overwrite=False), records=sent,
                         retries=2, pure=False)  # fmt: skip
    for future in as_completed(futures):
        rate.add(future.result())
    return PackSummary(writer.location, len(records), rate.count, rate.seconds, writer.finish())
