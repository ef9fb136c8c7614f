"""Stage one, ``tiekd cache-teacher``: run a teacher once over a split and store its depth maps.

A DataLoader decodes and crops images ahead of the teacher; a background thread quantises,
compresses and writes finished batches, so the teacher is the only thing on the critical path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from tiekd.data.datasets import CroppedImages, raise_batch_errors
from tiekd.data.kitti import KB_HEIGHT, KB_WIDTH, Record, check_root, file_sha256, gt_path, read_split, rgb_path
from tiekd.pipeline.cache import FRAMES_PER_SHARD, CacheSpec, shard_frames
from tiekd.pipeline.cache_writer import BackgroundWriter, CacheWriter
from tiekd.pipeline.errors import ConfigError, DataError, TeacherError
from tiekd.pipeline.teachers import load_teacher, predict_depth
from tiekd.stages.runtime import Rate, default_workers, directory_bytes, progress, resolve_device, use_amp

MIN_DEPTH = 1e-3
"""Smallest depth stored (metres); the KITTI protocol's lower bound."""
MAX_DEPTH = 80.0
"""Largest depth stored (metres); the KITTI protocol's upper bound."""


@dataclass
class CacheTeacherConfig:
    """Options of ``tiekd cache-teacher``, one field per flag."""

    teacher: str
    """Teacher spec, KIND:TARGET (see tiekd.pipeline.teachers)."""
    data_root: Path
    """KITTI raw root holding the split's RGB paths."""
    split: Path
    """Split file, one ``RGB_REL GT_REL|None FOCAL`` record a line."""
    out: str
    """Store path or fsspec URL."""
    gt_root: Path | None = None
    """Annotated depth root; when given, every record's GT must exist (checked before the run)."""
    name: str | None = None
    """Teacher group name in the store; default derived from the spec."""
    split_name: str | None = None
    """Split group name in the store; default the split file's stem."""
    teacher_args: dict = field(default_factory=dict)
    """Keyword arguments for python: factories and hf: from_pretrained."""
    teacher_input: tuple[int, int] | None = None
    """(H, W) to resize the crop to for the teacher, and back; None = run at the crop size."""
    flip_tta: bool = True
    """Average with the flipped-back prediction of the mirrored image."""
    batch_size: int = 4
    device: str = "auto"
    amp: bool = False
    """float16 autocast on CUDA (ignored on the CPU)."""
    workers: int = field(default_factory=default_workers)
    shard: tuple[int, int] = (0, 1)
    """(I, N): this process fills store shards I, I+N, I+2N, ... of the split."""
    overwrite: bool = False
    """Replace an existing teacher/split group made differently."""
    frames_per_shard: int = FRAMES_PER_SHARD
    """Frames per shard file when the store group is created (a resumed store keeps its own)."""
    crop: tuple[int, int] = (KB_HEIGHT, KB_WIDTH)
    min_depth: float = MIN_DEPTH
    max_depth: float = MAX_DEPTH


@dataclass
class CacheSummary:
    """What a run did."""

    location: str
    frames_total: int
    frames_written: int
    seconds: float
    complete: bool
    bytes_on_disk: int | None

    @property
    def frames_per_second(self) -> float:
        return self.frames_written / max(self.seconds, 1e-9)


def _check_inputs(cfg: CacheTeacherConfig, records: list[Record]) -> None:
    """Fail before any work (and before the store is touched) on missing roots or files."""
    data_root = check_root(cfg.data_root, flag="--data-root")
    for record in records:
        if not rgb_path(data_root, record).is_file():
            raise DataError(f"image {record.rgb} (split line {record.line}) is not under --data-root {data_root}")
    if cfg.gt_root is not None:
        gt_root = check_root(cfg.gt_root, flag="--gt-root")
        for record in records:
            gt_path(gt_root, record)
    index, count = cfg.shard
    if not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: expected I/N with 0 <= I < N")
    if cfg.overwrite and count > 1:
        raise ConfigError(
            "--overwrite with --shard would let every process delete the others' work; "
            "overwrite once with a single process, then start the shards"
        )


def _check_output(depth: torch.Tensor, ids: list[str]) -> None:
    finite = torch.isfinite(depth).flatten(1).all(1)
    if not bool(finite.all()):
        bad = ids[int((~finite).nonzero()[0])]
        raise TeacherError(f"the teacher's depth for {bad} contains NaN or inf; check the teacher and its input")


def _teacher_batches(cfg, records, todo, device):
    loader = DataLoader(
        CroppedImages(records, cfg.data_root, todo, crop=cfg.crop),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for batch in loader:
        raise_batch_errors(batch)
        yield batch["index"].tolist(), batch["image"].to(device, non_blocking=True)


def run(cfg: CacheTeacherConfig) -> CacheSummary:
    """Fill (or continue filling) ``out/name/split_name`` with the teacher's maps."""
    records = read_split(cfg.split)
    _check_inputs(cfg, records)
    device = resolve_device(cfg.device)
    teacher = load_teacher(cfg.teacher, args=cfg.teacher_args, device=device)
    spec = CacheSpec(
        teacher_spec=cfg.teacher,
        teacher_sha256=teacher.weights_sha256,
        split_sha256=file_sha256(cfg.split),
        crop=tuple(cfg.crop),
        teacher_input=cfg.teacher_input,
        flip_tta=cfg.flip_tta,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
    )
    ids = [r.rgb for r in records]
    writer = CacheWriter.create_or_resume(
        cfg.out,
        teacher=cfg.name or teacher.default_name,
        split=cfg.split_name or Path(cfg.split).stem,
        spec=spec,
        ids=ids,
        overwrite=cfg.overwrite,
        frames_per_shard=cfg.frames_per_shard,
        extra_attrs={"teacher_name": cfg.name or teacher.default_name, "split_file": str(cfg.split)},
    )
    todo = writer.pending(shard_frames(len(records), *cfg.shard, frames_per_shard=writer.frames_per_shard))
    rate = Rate()
    amp = use_amp(cfg.amp, device)
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with BackgroundWriter(writer) as background, progress(len(todo), f"caching {writer.location}") as bar:
        for indices, image in _teacher_batches(cfg, records, todo, device):
            with autocast:
                depth = predict_depth(
                    teacher.module, image.float() / 255, flip_tta=cfg.flip_tta, input_size=cfg.teacher_input
                )
            _check_output(depth, [ids[i] for i in indices])
            clipped = ((depth < cfg.min_depth) | (depth > cfg.max_depth)).flatten(1).sum(1)
            depth = depth.clamp_(cfg.min_depth, cfg.max_depth)[:, 0]
            background.submit(indices, depth.cpu().numpy(), clipped.cpu().numpy().astype(np.int32))
            rate.add(len(indices))
            bar.update(len(indices), f"{rate.per_second:.1f} frames/s")
    complete = writer.finish()
    return CacheSummary(
        location=writer.location,
        frames_total=len(records),
        frames_written=rate.count,
        seconds=rate.seconds,
        complete=complete,
        bytes_on_disk=directory_bytes(writer.location),
    )


def report(summary: CacheSummary) -> str:
    """The closing lines printed after a run."""
    size = summary.bytes_on_disk
    per_frame = f", {size / summary.frames_total / 1e3:.1f} kB/frame" if size and summary.complete else ""
    state = "complete" if summary.complete else "incomplete (other shards or frames still missing)"
    lines = [
        f"wrote {summary.frames_written} frames in {summary.seconds:.1f} s "
        f"({summary.frames_per_second:.2f} frames/s) to {summary.location}",
        f"store {state}: {summary.frames_total} frames" + (f", {size / 1e6:.1f} MB on disk{per_frame}" if size else ""),
    ]
    return "\n".join(lines)
