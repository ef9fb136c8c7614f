"""``tiekd cache info`` and ``tiekd cache verify``: what a store holds, and whether it is sound."""

from __future__ import annotations

import numpy as np
import zarr

from tiekd.pipeline.cache import TeacherCache, _open_root
from tiekd.stages.runtime import directory_bytes


def _caches(path: str):
    """Every (teacher, split) group of a store, opened read-only."""
    root = _open_root(path, mode="r")
    for teacher, group in sorted(root.groups()):
        for split, _ in sorted(group.groups()):
            yield teacher, split, TeacherCache.open(path, teacher, split)


def info(path: str) -> dict:
    """Teachers, splits, completion and sizes of a store, as a JSON-able dict."""
    entries = []
    for teacher, split, cache in _caches(path):
        done = int(cache.done.sum())
        size = directory_bytes(cache.location)
        attrs = cache.attrs
        entries.append({
            "teacher": teacher, "split": split, "frames": len(cache), "done": done,
            "complete": done == len(cache), "bytes": size,
            "bytes_per_frame": round(size / done) if size and done else None,
            "teacher_spec": attrs.get("teacher_spec"), "crop": attrs.get("crop"),
            "flip_tta": attrs.get("flip_tta"), "clipped_pixels": int(cache.clipped.sum()),
            "created": attrs.get("created"), "completed": attrs.get("completed"),
        })
    return {"store": path, "caches": entries}


def format_info(summary: dict) -> str:
    """A table of :func:`info` for people."""
    lines = [f"store {summary['store']}"]
    for e in summary["caches"]:
        size = f"{e['bytes'] / 1e6:.1f} MB" if e["bytes"] is not None else "remote"
        per_frame = f", {e['bytes_per_frame'] / 1e3:.1f} kB/frame" if e["bytes_per_frame"] else ""
        lines.append(
            f"  {e['teacher']}/{e['split']}: {e['done']}/{e['frames']} frames"
            f"{' (complete)' if e['complete'] else ''}, {size}{per_frame}, teacher {e['teacher_spec']}, "
            f"crop {e['crop']}, flip TTA {e['flip_tta']}, clipped pixels {e['clipped_pixels']}"
        )
    if not summary["caches"]:
        lines.append("  (no caches)")
    return "\n".join(lines)


def verify_cache(cache: TeacherCache) -> list[str]:
    """Read every stored map of one cache; list what is wrong (empty when sound)."""
    problems = []
    depth = cache._group["depth"]
    crop = tuple(cache.attrs.get("crop", ()))
    if depth.shape != (len(cache), *crop):
        problems.append(f"{cache.location}: depth has shape {depth.shape}, expected {(len(cache), *crop)}")
        return problems
    done = cache.done
    for start in range(0, len(cache), cache.frames_per_shard):
        block = slice(start, min(start + cache.frames_per_shard, len(cache)))
        if not done[block].any():
            continue
        try:
            values = depth[block]
        except Exception as e:  # a damaged shard can fail in the codec in many ways
            problems.append(f"{cache.location}: frames {block.start}-{block.stop - 1} unreadable ({e})")
            continue
        missing = done[block] & (values.reshape(len(values), -1) == 0).any(axis=1)
        for i in np.flatnonzero(missing):
            problems.append(f"{cache.location}: frame {start + i} ({cache.ids[start + i]}) is marked done but has unwritten pixels")
    return problems


def verify(path: str) -> tuple[int, list[str]]:
    """(frames read, problems) over every cache of a store."""
    frames, problems = 0, []
    for _, _, cache in _caches(path):
        frames += int(cache.done.sum())
        problems += verify_cache(cache)
    return frames, problems
