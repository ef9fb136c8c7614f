"""``tiekd cache info`` and ``tiekd cache verify``: what a store holds, and whether it is sound."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import TeacherCache, open_root
from tiekd.pipeline.store.formats import check_readable_format, child_groups, unsound_array
from tiekd.pipeline.store.inputs import PackedInputs, packed_splits
from tiekd.pipeline.store.repair import damaged_frames, rebuild_metadata, unmark, unsound_arrays
from tiekd.stages.runtime import directory_bytes


def _groups(path: str, *, mode: str = "r"):
    """Every (teacher, split, group) of a store."""
    root = open_root(path, mode=mode)
    for teacher, teacher_group in child_groups(root, location=path).items():
        for split, group in child_groups(teacher_group, location=f"{path}/{teacher}").items():
            yield teacher, split, group


def _entry(cache: TeacherCache) -> dict:
    """One cache's line of :func:`info`: who made it, completion, size, dates."""
    done = int(cache.done.sum())
    size = directory_bytes(cache.location)
    attrs = cache.attrs
    return {
        "frames": len(cache),
        "done": done,
        "complete": done == len(cache),
        "bytes": size,
        "bytes_per_frame": round(size / done) if size and done else None,
        "teacher_spec": attrs.get("teacher_spec"),
        "teacher_sha256": attrs.get("teacher_sha256"),
        "split_file": attrs.get("split_file"),
        # Stores from before the dataset was recorded were all KITTI (CacheSpec's default).
        "dataset": attrs.get("dataset", "kitti"),
        "crop": attrs.get("crop"),
        "flip_tta": attrs.get("flip_tta"),
        "clipped_pixels": int(cache.clipped.sum()),
        "store_format": attrs.get("tiekd_store_format"),
        "tiekd_version": attrs.get("tiekd_version"),
        "created": attrs.get("created"),
        "completed": attrs.get("completed"),
        "teacher_output": attrs.get("teacher_output", "metric"),
        "alignment": attrs.get("alignment"),
        "leakage_guard": attrs.get("leakage_guard"),
        "sources": attrs.get("sources"),
        "source_frames": cache.sources,
    }


def source_lines(entry: dict, *, most: int = 8) -> list[str]:
    """What a group of image sources was made from: per file, its frames (at most ``most`` files named)."""
    frames = entry.get("source_frames")
    if not frames:
        return []
    by_file: dict[str, list] = {}
    for frame in frames:
        by_file.setdefault(frame["path"], []).append(frame)
    videos = sum(1 for f in by_file.values() if f[0].get("frame") is not None)
    fit = (entry.get("sources") or {}).get("fit", "?")
    images = len(by_file) - videos
    lines = [
        f"      made from {images} image(s) and {len(frames) - images} frame(s) of {videos} video(s), fit {fit} "
        "(--json lists each with its size and content hash):"
    ]
    for path, items in list(by_file.items())[:most]:
        first = items[0]
        if first.get("frame") is None:
            lines.append(f"        {path} ({first['size'][0]}x{first['size'][1]})")
        else:
            indices = ", ".join(str(f["frame"]) for f in items[:6]) + (", ..." if len(items) > 6 else "")
            lines.append(f"        {path}: frames {indices} ({first['size'][0]}x{first['size'][1]})")
    if len(by_file) > most:
        lines.append(f"        ... and {len(by_file) - most} more file(s)")
    return lines


def info(path: str) -> dict:
    """Every teacher/split of a store with who made it, completion, size and dates, JSON-able.

    A group that cannot be opened is listed with its ``error`` instead of ending the listing."""
    entries = []
    for teacher, split, group in _groups(path):
        location = f"{path}/{teacher}/{split}"
        try:
            check_readable_format(group.attrs.get("tiekd_store_format"), location=location)
            entry = _entry(TeacherCache(group, location=location))
        except StoreError as e:
            entry = {"error": e.message}
        entries.append({"teacher": teacher, "split": split} | entry)
    packed = [_packed_entry(name, inputs) for name, inputs in packed_splits(path).items()]
    return {"store": path, "caches": entries} | ({"inputs": packed} if packed else {})


def _packed_entry(split: str, inputs: PackedInputs) -> dict:
    """One packed split of :func:`info`: frames, completion, GT, size."""
    done, size = int(inputs.done.sum()), directory_bytes(inputs.location)
    return {
        "split": split, "frames": len(inputs), "done": done, "complete": done == len(inputs),
        "dataset": inputs.attrs.get("dataset"), "with_gt": inputs.attrs.get("with_gt"), "bytes": size,
        "bytes_per_frame": round(size / done) if size and done else None, "sources": inputs.attrs.get("sources"),
    }  # fmt: skip


def _line(e: dict) -> str:
    if "error" in e:
        return f"  {e['teacher']}/{e['split']}: unreadable: {e['error']}"
    size = f"{e['bytes'] / 1e6:.1f} MB" if e["bytes"] is not None else "remote"
    per_frame = f", {e['bytes_per_frame'] / 1e3:.1f} kB/frame" if e["bytes_per_frame"] else ""
    state = "complete" if e["complete"] else "incomplete"
    sha = f" (weights sha256 {e['teacher_sha256'][:12]})" if e["teacher_sha256"] else ""
    crop = "x".join(map(str, e["crop"] or ()))
    return (
        f"  {e['teacher']}/{e['split']}: {e['done']}/{e['frames']} frames ({state}), {size}{per_frame}\n"
        f"      teacher {e['teacher_spec']}{sha}, dataset {e['dataset']}, crop {crop}, flip TTA {e['flip_tta']}, "
        f"clipped pixels {e['clipped_pixels']}, format {e['store_format']}\n"
        f"      created {e['created']}, completed {e['completed'] or '-'}"
    ) + "".join("\n" + line for line in [*alignment_lines(e), *source_lines(e)])


def alignment_lines(entry: dict) -> list[str]:
    """How a relative teacher's maps were made metric (one line), where they were."""
    alignment = entry.get("alignment")
    if not alignment:
        return []
    return [f"      {alignment['teacher_output']} teacher aligned per frame in {alignment['space']} to "
            f"{alignment['reference']} ({alignment['fit']}; arrays align_scale, align_shift, align_pixels)"]  # fmt: skip


def format_info(summary: dict) -> str:
    """A table of :func:`info` for people."""
    lines = [f"store {summary['store']}"] + [_line(e) for e in summary["caches"]]
    if not summary["caches"]:
        lines.append("  (no caches)")
    for e in summary.get("inputs", []):
        size = f", {e['bytes'] / 1e6:.1f} MB" if e["bytes"] is not None else ""
        sources = f", image sources fitted ({e['sources']['fit']})" if e.get("sources") else ""
        lines.append(f"  packed inputs {e['split']}: {e['done']}/{e['frames']} frames "
                     f"({'complete' if e['complete'] else 'incomplete'}), {e['dataset']}{sources}, "
                     f"{'with' if e['with_gt'] else 'without'} GT{size}")  # fmt: skip
    return "\n".join(lines)


@dataclass
class Verification:
    """What ``tiekd cache verify`` found, and did with ``--repair``."""

    frames: int = 0
    """Stored frames read back."""
    problems: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    unrepairable: list[str] = field(default_factory=list)
    """Groups whose problems --repair cannot fix (their arrays disagree with their own record)."""
    repair: bool = False
    """Whether --repair was asked for."""


REPAIR_ADVICE = "; run `tiekd cache verify --repair"
"""Where a damaged frame's message starts its advice (``formats.damaged_frame``)."""


def _verify_group(group, location: str, *, repair: bool, result: Verification) -> None:
    unsound = unsound_arrays(group, location=location)
    if unsound:
        result.problems += [unsound_array(location, name, why).message for name, why in unsound.items()]
        if not repair:
            return
        rebuild_metadata(group, list(unsound), location=location)
        result.repairs.append(f"{location}: rebuilt {', '.join(n + '/zarr.json' for n in unsound)} from its attributes")
    check_readable_format(group.attrs.get("tiekd_store_format"), location=location)
    cache = TeacherCache(group, location=location)
    shape = (len(cache), *tuple(cache.attrs.get("crop", ())))
    if cache.depth_shape != shape:
        result.problems.append(f"{location}: depth has shape {cache.depth_shape}, expected {shape}")
        result.unrepairable.append(location)
        return
    result.frames += int(cache.done.sum())
    damaged = damaged_frames(cache)
    # Under --repair a frame's own advice (run verify --repair, then cache-teacher) is what happens next.
    result.problems += [why.split(REPAIR_ADVICE)[0] if repair else why for why in damaged.values()]
    if repair and damaged:
        unmarked = unmark(group, list(damaged))
        result.repairs.append(
            f"{location}: marked {len(unmarked)} damaged frame(s) not done; run the same `tiekd cache-teacher` "
            "command again to recompute exactly those"
        )


def verify(path: str, *, repair: bool = False) -> Verification:
    """Read back every stored frame of every cache of a store; with ``repair``, rebuild lost array
    metadata and mark damaged frames not done (``pipeline/store/repair.py``)."""
    result = Verification(repair=repair)
    for teacher, split, group in _groups(path, mode="r+" if repair else "r"):
        _verify_group(group, f"{path}/{teacher}/{split}", repair=repair, result=result)
    for inputs in packed_splits(path).values():
        result.frames += int(inputs.done.sum())
        damaged = inputs.damaged()
        result.problems += damaged.values()
        if repair and damaged:
            inputs.unmark(list(damaged))
            result.repairs.append(f"{inputs.location}: marked {len(damaged)} damaged frame(s) not packed; run the "
                                  "same `tiekd cache pack` command again to pack exactly those")  # fmt: skip
    return result


def report_verification(store: str, result: Verification) -> str:
    """The lines ``tiekd cache verify`` prints: problems (on stderr), repairs, the summary; a
    ``StoreError`` where problems remain: ones --repair fixes but was not asked to, or ones it
    cannot fix (then never the advice to run it again)."""
    for problem in result.problems:
        click.echo(problem, err=True)
    for line in result.repairs:
        click.echo(line)
    if result.unrepairable:
        raise StoreError(
            f"{', '.join(result.unrepairable)}: arrays that disagree with the group's own record, which --repair "
            "cannot fix; remove the group with `tiekd cache rm` and cache that teacher again"
        )
    if result.problems and not result.repair:
        raise StoreError(
            f"{store}: {len(result.problems)} problem(s) in {result.frames} stored frames; "
            f"run `tiekd cache verify --repair {store}`, then cache-teacher (or cache pack, for packed inputs) again"
        )
    found = f"{len(result.problems)} problem(s), repaired" if result.problems else "no problems"
    return f"{store}: {result.frames} stored frames read, {found}"
