"""The teacher pass of stage one: run a loaded teacher over some frames and store its maps.

Used by ``cache-teacher`` in one process (all pending frames of its ``--shard``) and by each dask
worker (one store shard per task, :mod:`tiekd.stages.cache_cluster`). Every batch is checked
before it is stored: finite values, and at most ``max_clipped_share`` of a frame outside the
depth range; a failure stops the pass with one line and leaves the frames already stored.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from tiekd.data.datasets import CroppedImages, raise_batch_errors
from tiekd.data.kitti import Record, file_sha256
from tiekd.pipeline.cache import CacheSpec
from tiekd.pipeline.cache_writer import BackgroundWriter, CacheWriter
from tiekd.pipeline.errors import StoreError, TeacherError
from tiekd.pipeline.files import os_reason
from tiekd.pipeline.teachers import Teacher, predict_depth


def _teacher_batches(cfg, records: list[Record], frames: list[int], device: torch.device):
    loader = DataLoader(
        CroppedImages(records, cfg.data_root, frames, crop=cfg.crop),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for batch in loader:
        raise_batch_errors(batch)
        yield batch["index"].tolist(), batch["image"].to(device, non_blocking=True)


def teacher_depth(cfg, teacher: Teacher, image: torch.Tensor, ids: list[str], *, amp: bool) -> torch.Tensor:
    """Depth (B, 1, H, W) metres of uint8 ``image`` (B, 3, H, W); any failure of the teacher
    becomes one line naming it, the batch's first sample and the exception."""
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    try:
        with autocast:
            depth = predict_depth(
                teacher.module, image.float() / 255, flip_tta=cfg.flip_tta, input_size=cfg.teacher_input
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


def check_finite(depth: torch.Tensor, ids: list[str]) -> None:
    finite = torch.isfinite(depth).flatten(1).all(1)
    if not bool(finite.all()):
        bad = ids[int((~finite).nonzero()[0])]
        raise TeacherError(f"the teacher's depth for {bad} contains NaN or inf; check the teacher and its input")


def clip_depth(cfg, depth: torch.Tensor, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Depth (B, H, W) clipped into [min_depth, max_depth] and clipped pixels per frame (B,).

    A frame with more than ``max_clipped_share`` of its pixels outside the range is refused:
    such a map says more about the teacher's units than about the scene.
    """
    clipped = ((depth < cfg.min_depth) | (depth > cfg.max_depth)).flatten(1).sum(1)
    share = clipped.double() / depth[0].numel()
    worst = int(share.argmax())
    if float(share[worst]) > cfg.max_clipped_share:
        raise TeacherError(
            f"{float(share[worst]):.1%} of the teacher's depth for {ids[worst]} lies outside "
            f"[{cfg.min_depth:g}, {cfg.max_depth:g}] m (limit {cfg.max_clipped_share:.1%}); check the teacher's "
            "units and range, or raise --max-clipped-share"
        )
    depth = depth.clamp(cfg.min_depth, cfg.max_depth)[:, 0]
    return depth.cpu().numpy(), clipped.cpu().numpy().astype(np.int32)


def open_writer(cfg, teacher: Teacher, records: list[Record]) -> CacheWriter:
    """Create or resume the store group ``cfg`` names for ``teacher``'s maps of ``records``."""
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
    name = cfg.name or teacher.default_name
    with _store_errors(f"{cfg.out}/{name}"):
        return CacheWriter.create_or_resume(
            cfg.out,
            teacher=name,
            split=cfg.split_name or Path(cfg.split).stem,
            spec=spec,
            ids=[r.rgb for r in records],
            overwrite=cfg.overwrite,
            frames_per_shard=cfg.frames_per_shard,
            extra_attrs={"teacher_name": name, "split_file": str(cfg.split)},
        )


def finish(writer: CacheWriter) -> bool:
    """Record completion where every frame is stored; True if complete."""
    with _store_errors(writer.location):
        return writer.finish()


@contextlib.contextmanager
def _store_errors(location: str):
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
) -> int:
    """Run the teacher over ``frames`` (indices into ``records``) and store their maps.

    Returns the frames written.
    """
    ids = [r.rgb for r in records]
    written = 0
    with _store_errors(writer.location), BackgroundWriter(writer) as background:
        for indices, image in _teacher_batches(cfg, records, frames, device):
            batch_ids = [ids[i] for i in indices]
            depth, clipped = clip_depth(cfg, teacher_depth(cfg, teacher, image, batch_ids, amp=amp), batch_ids)
            background.submit(indices, depth, clipped)
            written += len(indices)
            on_batch(len(indices))
    return written
