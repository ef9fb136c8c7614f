"""``tiekd cache rm``: remove one teacher's maps (all splits, or one), or a packed split, from a store, safely.

A group still being filled may belong to a running ``cache-teacher`` (or a dask cluster's
workers): removing it under them would lose their work or leave half-written shards, so an
incomplete group is removed only with ``force``, and never while a writer holds its lease
(:mod:`tiekd.pipeline.store.lease`). In a local store removal is all or nothing and
stays inside the store: a group that is a symbolic link is refused (deleting through it would
delete the link's target), and the groups are first renamed aside into one folder of the store,
then deleted, so a failure leaves either every group or none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import open_root
from tiekd.pipeline.store.formats import INPUTS_GROUP, check_group_name, child_groups
from tiekd.pipeline.store.lease import exclusive_group
from tiekd.pipeline.store.writer import remove_group


def _incomplete(group) -> bool:
    """Whether a split group is not (known to be) complete."""
    try:
        return "completed" not in group.attrs or not bool(group["done"][:].all())
    except (KeyError, ValueError, TypeError):  # lost metadata: nothing proves it complete
        return True


def _store_root(path: str):
    root = open_root(path, mode="r+")
    if "tiekd_store_format" not in root.attrs:
        raise StoreError(f"{path} is not a tiekd store; nothing removed")
    return root


def remove_inputs(path: str, *, split: str, force: bool = False) -> list[str]:
    """Delete the packed split ``path/_inputs/split`` (``tiekd cache pack``); returns the group removed.
    An incomplete one only with ``force``, and never while a ``cache pack`` holds its lease."""
    check_group_name(split, flag="--inputs")
    root = _store_root(path)
    packed = child_groups(root[INPUTS_GROUP], location=f"{path}/{INPUTS_GROUP}") if INPUTS_GROUP in root else {}
    if split not in packed:
        raise StoreError(f"{path} holds no packed split {split!r} (it has: {', '.join(packed) or 'none'})")
    if _incomplete(packed[split]) and not force:
        raise StoreError(f"{path}/{INPUTS_GROUP}/{split} is incomplete and may still be being packed; "
                         "pass --force once no cache pack writes to it")  # fmt: skip
    _delete(path, root, INPUTS_GROUP, [split], last=len(packed) == 1)
    return [f"{path}/{INPUTS_GROUP}/{split}"]


def remove(path: str, *, teacher: str, split: str | None = None, force: bool = False) -> list[str]:
    """Delete ``path/teacher/split`` (every split of ``teacher`` when ``split`` is None); returns
    the groups removed. The teacher group goes with its last split."""
    check_group_name(teacher, flag="--teacher")
    check_group_name(split, flag="--split")
    root = _store_root(path)
    teachers = child_groups(root, location=path)
    if teacher not in teachers:
        raise StoreError(f"{path} holds no teacher {teacher!r} (it has: {', '.join(teachers) or 'none'})")
    teacher_group = teachers[teacher]
    names = list(child_groups(teacher_group, location=f"{path}/{teacher}"))
    splits = names if split is None else [split]
    if split is not None and split not in names:
        raise StoreError(f"{path}/{teacher} holds no split {split!r} (it has: {', '.join(names)})")
    unfinished = [s for s in splits if _incomplete(teacher_group[s])]
    if unfinished and not force:
        raise StoreError(
            f"{path}/{teacher}/{unfinished[0]} is incomplete and may still be being written; "
            "pass --force once no cache-teacher writes to it"
        )
    _delete(path, root, teacher, splits, last=len(splits) == len(names))
    return [f"{path}/{teacher}/{name}" for name in splits]


def _local_folder(path: str) -> Path | None:
    """The store's folder when it is on a local file system, else None (fsspec URLs)."""
    if path.startswith("file://"):
        return Path(path.removeprefix("file://"))
    return None if "://" in path else Path(path)


def _delete(path: str, root, teacher: str, splits: list[str], *, last: bool) -> None:
    """Delete the split groups (and the teacher group with its last split)."""
    folder = _local_folder(path)
    if folder is None:
        for name in splits:  # under the group's exclusive lease: never under a writer
            remove_group(root[teacher], name, location=f"{path.rstrip('/')}/{teacher}/{name}")
        if last:
            del root[teacher]
        return
    targets = [teacher] if last else [f"{teacher}/{name}" for name in splits]
    _refuse_links(folder, teacher, targets)
    with contextlib.ExitStack() as leases:  # never under a running cache-teacher, --force or not
        for name in splits:
            leases.enter_context(exclusive_group(str(folder / teacher / name)))
        _remove_aside(folder, targets)


def _refuse_links(folder: Path, teacher: str, targets: list[str]) -> None:
    """Refuse groups reached through a symbolic link: removal never leaves the store."""
    for relative in dict.fromkeys([teacher, *targets]):
        if (folder / relative).is_symlink():
            raise StoreError(
                f"{folder / relative} is a symbolic link; cache rm never deletes through a link out of the "
                "store: remove the link itself (rm), nothing was removed"
            )


def _remove_aside(folder: Path, targets: list[str]) -> None:
    """Rename every target into one hidden folder of the store (undone if one rename fails), then
    delete that folder: the store loses all the targets or none."""
    aside = folder / f".tiekd-removing-{uuid.uuid4().hex}"
    aside.mkdir()
    moved = []
    try:
        for number, relative in enumerate(targets):
            os.rename(folder / relative, aside / str(number))
            moved.append(relative)
    except OSError as e:
        for number, relative in enumerate(moved):
            os.rename(aside / str(number), folder / relative)
        aside.rmdir()
        raise StoreError(f"cannot remove {folder / targets[len(moved)]} ({e.strerror}); nothing was removed") from e
    shutil.rmtree(aside)
