"""``tiekd cache rm``: remove one teacher's maps (all splits, or one) from a store, safely.

A group still being filled may belong to a running ``cache-teacher`` (or a dask cluster's
workers): removing it under them would lose their work or leave half-written shards, so an
incomplete group is removed only with ``force``.
"""

from __future__ import annotations

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import open_root
from tiekd.pipeline.store.formats import check_group_name, child_groups


def _incomplete(group) -> bool:
    """Whether a split group is not (known to be) complete."""
    try:
        return "completed" not in group.attrs or not bool(group["done"][:].all())
    except (KeyError, ValueError, TypeError):  # lost metadata: nothing proves it complete
        return True


def remove(path: str, *, teacher: str, split: str | None = None, force: bool = False) -> list[str]:
    """Delete ``path/teacher/split`` (every split of ``teacher`` when ``split`` is None); returns
    the groups removed. The teacher group goes with its last split."""
    check_group_name(teacher, flag="--teacher")
    check_group_name(split, flag="--split")
    root = open_root(path, mode="r+")
    if "tiekd_store_format" not in root.attrs:
        raise StoreError(f"{path} is not a tiekd store; nothing removed")
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
    for name in splits:
        del teacher_group[name]
    if not child_groups(teacher_group, location=f"{path}/{teacher}"):
        del root[teacher]
    return [f"{path}/{teacher}/{name}" for name in splits]
