"""Training from a store group of image sources (``cache-teacher --images``): no split file, the
group's own record of its frames (array ``sources``) says what to read; and ``--init-from``."""

from __future__ import annotations

from pathlib import Path

import torch

from tiekd.data.packed import PackedSource
from tiekd.data.registry import get_dataset
from tiekd.data.sources.listing import SourceFrame
from tiekd.data.sources.packed import packed_sources
from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.pipeline.errors import CheckpointError, StoreError
from tiekd.pipeline.files import file_sha256
from tiekd.pipeline.store.cache import TeacherCache


def group_frames(cache: TeacherCache) -> tuple[list[SourceFrame], str]:
    """The source frames of a group and how they were fitted; StoreError for a group of a split file."""
    recorded = cache.sources
    if recorded is None:
        raise StoreError(
            f"{cache.location} was cached from a split file; pass that --split (and --data-root) to train on it"
        )
    frames = [SourceFrame(**(r | {"size": tuple(r["size"])})) for r in recorded]
    return frames, (cache.attrs.get("sources") or {}).get("fit", "whole")


def source_packed(cfg, ref: tuple[str, str, str], frames: list[SourceFrame], fit: str) -> PackedSource | None:
    """The packed frames of image-source group ``ref`` (``_inputs/<split>`` of --inputs, else of the --cache
    store), checked against the group's frames; None where the store packs none: the files are read."""
    store = cfg.inputs or ref[0]
    return packed_sources(store, ref[2], frames, fit=fit, dataset=get_dataset(cfg.dataset), group="/".join(ref))


ARCH_KEYS = ("encoder", "head", "n_bins", "min_depth", "max_depth", "decoder")
"""What a student to fine-tune must share with the run: its layers and its depth bins."""


def start_from_checkpoint(model: torch.nn.Module, path: Path) -> dict:
    """Load the weights of tiekd student checkpoint ``path`` into ``model`` (``--init-from``);
    returns what run.json records of it. Refused in one line where the architectures differ."""
    state = load_checkpoint(path)
    theirs, ours = state["architecture"], model.arch
    differences = [
        f"{key} {theirs.get(key)!r} in it vs {ours.get(key)!r} here"
        for key in ARCH_KEYS
        if theirs.get(key, "standard" if key == "decoder" else None)
        != ours.get(key, "standard" if key == "decoder" else None)
    ]
    if differences:
        raise CheckpointError(
            f"--init-from {path} holds another student ({'; '.join(differences)}); "
            "train with its --student, --method, --n-bins, --min-depth, --max-depth and --decoder"
        )
    model.load_state_dict(state["model"])
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "step": state.get("step"),
        "dataset": (state.get("config") or {}).get("dataset"),
    }


def start_architecture_weights(path: Path | None) -> str | None:
    """The timm tag a checkpoint's student was built with (its input normalisation), or None."""
    return None if path is None else load_checkpoint(path)["architecture"].get("weights")


def check_same_frames(first: tuple[str, str, str] | None, other: tuple[str, str, str]) -> None:
    """Refuse, in one line, a teacher group of a mixture over other frames than the first one's."""
    if first is None:
        return
    ours, theirs = (TeacherCache.open(*ref) for ref in (first, other))
    if ours.ids != theirs.ids:
        raise StoreError(
            f"--teacher-mix: {theirs.location} holds other frames than {ours.location} ({len(theirs)} vs {len(ours)}, "
            "or another order); cache every teacher over the same split or images"
        )
