"""``tiekd cache info`` and ``tiekd cache verify``: what a store holds, and whether it is sound."""

from __future__ import annotations

import numpy as np

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
        entries.append(
            {
                "teacher": teacher,
                "split": split,
                "frames": len(cache),
                "done": done,
                "complete": done == len(cache),
                "bytes": size,
                "bytes_per_frame": round(size / done) if size and done else None,
                "teacher_spec": attrs.get("teacher_spec"),
                "crop": attrs.get("crop"),
                "flip_tta": attrs.get("flip_tta"),
                "clipped_pixels": int(cache.clipped.sum()),
                "created": attrs.get("created"),
                "completed": attrs.get("completed"),
            }
        )
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
    """Read every map of one cache (store shards in parallel, with dask); list what is wrong.

    A frame marked done must have no unwritten (0) pixel; the arrays must have the crop's shape.
    """
    crop = tuple(cache.attrs.get("crop", ()))
    shape = (len(cache), *crop)
    if cache.to_dask().shape != shape:
        return [f"{cache.location}: depth has shape {cache.to_dask().shape}, expected {shape}"]
    try:
        unwritten = (cache.to_dask() == 0).any(axis=(1, 2)).compute()
    except Exception as e:  # a damaged shard can fail in the codec in many ways
        return [f"{cache.location}: a shard cannot be read ({type(e).__name__}: {e})"]
    return [
        f"{cache.location}: frame {i} ({cache.ids[i]}) is marked done but has unwritten pixels"
        for i in np.flatnonzero(cache.done & unwritten)
    ]


def verify(path: str) -> tuple[int, list[str]]:
    """(frames read, problems) over every cache of a store."""
    frames, problems = 0, []
    for _, _, cache in _caches(path):
        frames += int(cache.done.sum())
        problems += verify_cache(cache)
    return frames, problems
