"""Stage one, ``tiekd cache-teacher``: run a teacher once over a split and store its depth maps.

A DataLoader decodes and crops images ahead of the teacher; a background thread quantises,
compresses and writes finished batches, so the teacher is the only thing on the critical path.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiekd.pipeline.store.cache import TeacherCache, shard_frames
from tiekd.pipeline.teachers.load import load_teacher
from tiekd.stages import pack_inputs
from tiekd.stages.caching.align import References
from tiekd.stages.caching.cluster import cluster_client, gathered_map, run_shards
from tiekd.stages.caching.config import CacheTeacherConfig, absolute, check_frame_options, check_inputs
from tiekd.stages.caching.sources import frames_of
from tiekd.stages.caching.worker import fill_frames, finish, open_writer
from tiekd.stages.leakage import leakage_guard
from tiekd.stages.pack_inputs import PackSummary, inputs_config
from tiekd.stages.runtime import Rate, directory_bytes, progress, resolve_device, use_amp


@dataclass
class CacheSummary:
    """What a run did."""

    location: str
    frames_total: int
    frames_written: int
    seconds: float
    complete: bool
    bytes_on_disk: int | None
    clipped_share: float = 0.0
    """Share of the stored pixels whose teacher depth lay outside the depth range and was clipped."""
    packed: PackSummary | None = None
    """What ``--with-inputs`` packed."""

    @property
    def frames_per_second(self) -> float:
        return self.frames_written / max(self.seconds, 1e-9)


def run(cfg: CacheTeacherConfig) -> CacheSummary:
    """Fill (or continue filling) ``out/name/split_name`` with the teacher's maps."""
    check_frame_options(cfg)
    if cfg.cluster:
        with cluster_client(cfg.cluster) as client:
            return _run_on_cluster(cfg, client)
    records, references, notes = _frames(cfg)
    device = resolve_device(cfg.device)
    teacher = load_teacher(cfg.teacher, args=cfg.teacher_args, device=device)
    amp = use_amp(cfg.amp, device)
    writer = open_writer(cfg, teacher, records, amp=amp, notes=notes)
    todo = writer.pending(shard_frames(len(records), *cfg.shard, frames_per_shard=writer.frames_per_shard))
    rate = Rate()
    with progress(len(todo), f"caching {writer.location}") as bar:

        def on_batch(n: int) -> None:
            rate.add(n)
            bar.update(n, f"{rate.per_second:.1f} frames/s")

        fill_frames(
            cfg, teacher, writer, records, todo, device=device, amp=amp, on_batch=on_batch, references=references
        )
    complete = finish(writer)
    packed = pack_inputs.run(inputs_config(cfg), records) if cfg.with_inputs else None
    return CacheSummary(
        packed=packed,
        location=writer.location,
        frames_total=len(records),
        frames_written=rate.count,
        seconds=rate.seconds,
        complete=complete,
        bytes_on_disk=directory_bytes(writer.location),
        clipped_share=clipped_share(writer.location),
    )


def _frames(cfg: CacheTeacherConfig, *, map=map) -> tuple[list, References | None, dict]:
    """The frames to cache (``map`` lists image sources' parts), checked against the leakage guard, with
    a relative teacher's alignment references and the notes a new group records."""
    records = frames_of(cfg, map=map)
    check_inputs(cfg, records)
    guard = leakage_guard(cfg, records, what="frames")
    references = References(cfg, records) if cfg.teacher_output != "metric" else None
    return records, references, {"leakage_guard": guard, "alignment": references and references.describe()}


def _run_on_cluster(cfg: CacheTeacherConfig, client) -> CacheSummary:
    """The frames listed and the shards cached on a dask cluster's workers, one worker a task at a time."""
    records, _, notes = _frames(cfg, map=gathered_map(client))
    cfg = absolute(cfg)
    location, written, seconds, complete = run_shards(cfg, client, records, notes)
    packed = pack_inputs.run_on_cluster(inputs_config(cfg), client, records) if cfg.with_inputs else None
    return CacheSummary(
        packed=packed,
        location=location,
        frames_total=len(records),
        frames_written=written,
        seconds=seconds,
        complete=complete,
        bytes_on_disk=directory_bytes(location),
        clipped_share=clipped_share(location),
    )


def clipped_share(location: str) -> float:
    """Share of the stored pixels of the group at ``location`` (``STORE/teacher/split``) that were
    clipped into the depth range: a run just under --max-clipped-share a frame says so."""
    cache = TeacherCache.open(*location.rsplit("/", 2))
    done = cache.done
    pixels = int(done.sum()) * cache.depth_shape[1] * cache.depth_shape[2]
    return float(cache.clipped[done].sum()) / pixels if pixels else 0.0


def report(summary: CacheSummary) -> str:
    """The closing lines printed after a run."""
    size = summary.bytes_on_disk
    per_frame = f", {size / summary.frames_total / 1e3:.1f} kB/frame" if size and summary.complete else ""
    state = "complete" if summary.complete else "incomplete (other shards or frames still missing)"
    clipped = (
        f"; {summary.clipped_share:.2%} of its pixels lay outside the depth range and were clipped"
        if summary.clipped_share
        else ""
    )
    lines = [
        f"wrote {summary.frames_written} frames in {summary.seconds:.1f} s "
        f"({summary.frames_per_second:.2f} frames/s) to {summary.location}",
        f"store {state}: {summary.frames_total} frames"
        + (f", {size / 1e6:.1f} MB on disk{per_frame}" if size else "")
        + clipped,
    ]
    if summary.packed is not None:
        lines.append(pack_inputs.report(summary.packed))
    return "\n".join(lines)
