"""The teacher pass of stage one: run a loaded teacher over some frames and store its maps.

Used by ``cache-teacher`` in one process (all pending frames of its ``--shard``) and by each dask
worker (one store shard per task, :mod:`tiekd.stages.caching.cluster`). Every batch is checked
before it is stored: finite values, and at most ``max_clipped_share`` of a frame outside the
depth range; a failure stops the pass with one line and leaves the frames already stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
from collections.abc import Callable

import numpy as np
import torch
from distributed import get_worker
from torch.utils.data import DataLoader

from tiekd.data.datasets import raise_batch_errors
from tiekd.data.records import Record
from tiekd.data.registry import get_dataset
from tiekd.pipeline.errors import StoreError, TeacherError
from tiekd.pipeline.files import os_reason
from tiekd.pipeline.store.cache import CacheSpec, shard_frames
from tiekd.pipeline.store.lease import shard_lease
from tiekd.pipeline.store.writer import BackgroundWriter, CacheWriter
from tiekd.pipeline.teachers.load import Teacher, load_teacher, predict_depth
from tiekd.stages.caching.align import ALIGN_ARRAYS, References, align_batch
from tiekd.stages.caching.config import CacheTeacherConfig
from tiekd.stages.caching.sources import frames_sha256, group_name, source_attrs, teacher_inputs
from tiekd.stages.runtime import resolve_device


def _teacher_batches(cfg: CacheTeacherConfig, records: list[Record], frames: list[int], device: torch.device):
    loader = DataLoader(
        teacher_inputs(cfg, records, frames),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for batch in loader:
        raise_batch_errors(batch)
        yield batch["index"].tolist(), batch["image"].to(device, non_blocking=True)


def teacher_depth(cfg: CacheTeacherConfig, teacher: Teacher, image: torch.Tensor, ids: list[str], *, amp: bool) -> torch.Tensor:
    """Depth (B, 1, H, W) metres of uint8 ``image`` (B, 3, H, W); any failure of the teacher
    becomes one line naming it, the batch's first sample and the exception."""
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    try:
        with autocast:
            depth = predict_depth(
                teacher.module, image.float() / 255, flip_tta=cfg.flip_tta, input_size=teacher_input(cfg, teacher)
            )
    except TeacherError:
        raise
    except Exception as e:  # the teacher's own code: any exception, reported as one line
        first = (str(e).strip().splitlines() or [""])[0]
        raise TeacherError(
            f"--teacher {teacher.spec} failed on the batch starting at {ids[0]} ({type(e).__name__}: {first})"
        ) from e
    check_finite(depth, ids)
    return depth


def teacher_input(cfg: CacheTeacherConfig, teacher: Teacher) -> tuple[int, int] | None:
    """(H, W) the teacher runs at: --teacher-input, else the size it was trained at (a checkpoint
    teacher's training scale of the crop), else None (the crop itself). A teacher that accepts only
    one size (an ``export:`` program exported at a fixed size) must be given it."""
    size = cfg.teacher_input or teacher.native_input(cfg.crop)
    fixed = teacher.fixed_input
    if fixed is not None and tuple(size or cfg.crop) != tuple(fixed):
        given = "x".join(map(str, size or cfg.crop))
        wanted = "x".join(map(str, fixed))
        raise TeacherError(
            f"--teacher {teacher.spec} was exported for {wanted} inputs only and would get {given}; pass "
            f"--teacher-input {wanted} (the crop is resized to it and the map back), or export it with dynamic H and W"
        )
    return size


def check_finite(depth: torch.Tensor, ids: list[str]) -> None:
    finite = torch.isfinite(depth).flatten(1).all(1)
    if not bool(finite.all()):
        bad = ids[int((~finite).nonzero()[0])]
        raise TeacherError(f"the teacher's depth for {bad} contains NaN or inf; check the teacher and its input")


def clip_depth(cfg: CacheTeacherConfig, depth: torch.Tensor, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Depth (B, H, W) clipped into [min_depth, max_depth] and clipped pixels per frame (B,).

    A frame with more than ``max_clipped_share`` of its pixels outside the range is refused:
    such a map says more about the teacher's units than about the scene.
    """
    clipped = ((depth < cfg.min_depth) | (depth > cfg.max_depth)).flatten(1).sum(1)
    share = clipped.double() / depth[0].numel()
    worst = int(share.argmax())
    # An aligned relative map has metric units by construction; its far sky is clipped, not wrong.
    if cfg.teacher_output == "metric" and float(share[worst]) > cfg.max_clipped_share:
        raise TeacherError(
            f"{float(share[worst]):.1%} of the teacher's depth for {ids[worst]} lies outside "
            f"[{cfg.min_depth:g}, {cfg.max_depth:g}] m (limit {cfg.max_clipped_share:.1%}); check the teacher's "
            "units and range, or raise --max-clipped-share"
        )
    depth = depth.clamp(cfg.min_depth, cfg.max_depth)[:, 0]
    return depth.cpu().numpy(), clipped.cpu().numpy().astype(np.int32)


def cache_spec(cfg: CacheTeacherConfig, teacher: Teacher, records: list[Record]) -> CacheSpec:
    """What makes the group's maps what they are (compared when a group is resumed)."""
    return CacheSpec(
        teacher_spec=cfg.teacher,
        teacher_sha256=teacher.weights_sha256,
        split_sha256=frames_sha256(cfg, records),
        crop=tuple(cfg.crop),
        teacher_input=teacher_input(cfg, teacher),
        flip_tta=cfg.flip_tta,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        dataset=get_dataset(cfg.dataset).name,
        teacher_output=cfg.teacher_output,
    )


def open_writer(
    cfg: CacheTeacherConfig, teacher: Teacher, records: list[Record], *, amp: bool, notes: dict | None = None
) -> CacheWriter:
    """Create or resume the store group ``cfg`` names for ``teacher``'s maps of ``records``;
    ``amp``: whether float16 autocast runs (recorded with the teacher's dtype and arguments);
    ``notes``: more attributes a new group records (the leakage guard's check)."""
    name = cfg.name or teacher.default_name
    dataset = get_dataset(cfg.dataset)
    with store_errors(f"{cfg.out}/{name}"):
        return CacheWriter.create_or_resume(
            cfg.out,
            teacher=name,
            split=group_name(cfg),
            spec=cache_spec(cfg, teacher, records),
            ids=[r.rgb for r in records],
            sources=[r.to_json() for r in records] if cfg.images else None,
            per_frame=ALIGN_ARRAYS if cfg.teacher_output != "metric" else None,
            overwrite=cfg.overwrite,
            frames_per_shard=cfg.frames_per_shard,
            store_format=cfg.store_format,
            extra_attrs={
                "teacher_name": name,
                **source_attrs(cfg),
                "teacher_args": cfg.teacher_args,
                "teacher_dtype": teacher.dtype,
                "autocast": "float16" if amp else None,
                "maps": _maps_text(cfg, dataset),
            }
            | (notes or {}),
        )


def _maps_text(cfg: CacheTeacherConfig, dataset) -> str:
    """What the maps are, in words, for the group's record."""
    if cfg.images:
        how = (
            "resized whole" if cfg.fit == "whole" else f"cropped to its shape as the {dataset.cache_crop_name}, resized"
        )
        return f"{cfg.crop[0]}x{cfg.crop[1]}: each source image {how} (data/sources/fit.py)"
    return f"{cfg.crop[0]}x{cfg.crop[1]} {dataset.cache_crop_name} of each {dataset.title} image, pixel-aligned with it"


def finish(writer: CacheWriter) -> bool:
    """Record completion where every frame is stored; True if complete."""
    with store_errors(writer.location):
        return writer.finish()


@contextlib.contextmanager
def store_errors(location: str):
    """A failed write (disk full, permissions) as one line; frames already marked done stay."""
    try:
        yield
    except OSError as e:
        raise StoreError(
            f"writing {location} failed ({os_reason(e)}); free space or fix the target and run the "
            "command again: it continues with the frames not yet stored"
        ) from e


def fill_frames(
    cfg,
    teacher: Teacher,
    writer: CacheWriter,
    records: list[Record],
    frames: list[int],
    *,
    device: torch.device,
    amp: bool,
    on_batch: Callable[[int], None] = lambda n: None,
    references: References | None = None,
) -> int:
    """Run the teacher over ``frames`` (indices into ``records``) and store their maps (a relative
    teacher's aligned to ``references`` first, :mod:`tiekd.stages.caching.align`), holding the
    lease of their store shards. A run that fails before storing any frame removes the group it
    opened if that holds nothing (its rerun may then differ, e.g. in --teacher-input).

    Returns the frames written.
    """
    ids = [r.rgb for r in records]
    written = 0
    shards = {frame // writer.frames_per_shard for frame in frames}
    try:
        with store_errors(writer.location), shard_lease(writer.location, shards), BackgroundWriter(writer) as background:
            for indices, image in _teacher_batches(cfg, records, frames, device):
                batch_ids = [ids[i] for i in indices]
                depth, extras = teacher_depth(cfg, teacher, image, batch_ids, amp=amp), None
                if references is not None:
                    depth, extras = align_batch(cfg, references, depth, indices, batch_ids)
                depth, clipped = clip_depth(cfg, depth, batch_ids)
                background.submit(indices, depth, clipped, extras)
                written += len(indices)
                on_batch(len(indices))
    except BaseException:
        with contextlib.suppress(Exception):
            writer.discard_if_empty()
        raise
    return written


# ---- dask worker side: one store shard per task (see tiekd.stages.caching.cluster) ----

_TEACHERS: dict[tuple[str, str, str], Teacher] = {}
"""Teachers this worker process has loaded, by (spec, teacher args, device): loaded once, kept
for every later shard (the worker-side cache dask's docs recommend for expensive state)."""


def worker_device(name: str) -> torch.device:
    """The device of this dask worker: with CUDA, GPU ``k`` for worker ``k`` of a LocalCluster
    (workers named 0..N-1), else the one device the worker sees (e.g. one GPU per SLURM job)."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        slot = get_worker().name
        device = torch.device("cuda", slot % torch.cuda.device_count() if isinstance(slot, int) else 0)
        torch.cuda.set_device(device)
    return device


def _worker_teacher(cfg: CacheTeacherConfig, device: torch.device) -> Teacher:
    key = (cfg.teacher, json.dumps(cfg.teacher_args, sort_keys=True), str(device))
    if key not in _TEACHERS:
        _TEACHERS[key] = load_teacher(cfg.teacher, args=cfg.teacher_args, device=device)
    return _TEACHERS[key]


def shard_range(shard: int, frames_per_shard: int, n_frames: int) -> list[int]:
    """Frame indices of store shard ``shard``."""
    return list(range(shard * frames_per_shard, min((shard + 1) * frames_per_shard, n_frames)))


def _worker_amp(cfg: CacheTeacherConfig, device: torch.device) -> bool:
    """Whether autocast runs; quietly (runtime.use_amp's note would repeat once a shard)."""
    return cfg.amp and device.type == "cuda"


def prepare_store(
    cfg: CacheTeacherConfig, shards_of: tuple[int, int], records: list, notes: dict
) -> tuple[str, dict[int, int]]:
    """Create or resume the store group (honouring ``cfg.overwrite``) of ``records`` (the client's
    list: split records or source frames), with ``notes`` (the leakage guard's and alignment's
    record); returns its location and the frames still missing per store shard among those of
    process ``shards_of`` = (I, N)."""
    device = worker_device(cfg.device)
    writer = open_writer(cfg, _worker_teacher(cfg, device), records, amp=_worker_amp(cfg, device), notes=notes)
    fps, todo = writer.frames_per_shard, {}
    for frame in writer.pending(shard_frames(len(records), *shards_of, frames_per_shard=writer.frames_per_shard)):
        todo[frame // fps] = todo.get(frame // fps, 0) + 1
    return writer.location, todo


def cache_shard(shard: int, cfg: CacheTeacherConfig, records: list) -> int:
    """Store the missing maps of store shard ``shard``; returns the frames written. Idempotent:
    frames already marked done are skipped, so a shard redone after a lost worker costs only the
    rest. A relative teacher's maps are aligned on the worker, to references it reads itself."""
    device = worker_device(cfg.device)
    teacher = _worker_teacher(cfg, device)
    amp = _worker_amp(cfg, device)
    writer = open_writer(dataclasses.replace(cfg, overwrite=False), teacher, records, amp=amp)
    frames = writer.pending(shard_range(shard, writer.frames_per_shard, len(records)))
    references = References(cfg, records) if cfg.teacher_output != "metric" else None
    # dask's worker processes are daemons, which may not start DataLoader workers
    loader_workers = 0 if multiprocessing.current_process().daemon else cfg.workers
    run_cfg = dataclasses.replace(cfg, workers=loader_workers)
    return fill_frames(run_cfg, teacher, writer, records, frames, device=device, amp=amp, references=references)


def finish_store(cfg: CacheTeacherConfig, records: list) -> bool:
    """Record completion of the store group once every frame is stored; True if complete."""
    device = worker_device(cfg.device)
    writer = open_writer(dataclasses.replace(cfg, overwrite=False), _worker_teacher(cfg, device), records, amp=False)
    return finish(writer)
