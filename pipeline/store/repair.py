"""Finding and repairing damage in a teacher/split group (``tiekd cache verify [--repair]``).

Repair never invents data: it rebuilds lost array metadata from the group's own attributes
(the layout a group was created with is fully recorded there), and marks damaged frames not
done so that the next ``tiekd cache-teacher`` run recomputes exactly those frames. A shard
whose index is unreadable cannot take new frames (zarr rewrites a shard through its index), so
where every stored frame of a shard is damaged the shard file is removed with them.
"""

from __future__ import annotations

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from tiekd.pipeline.errors import StoreError, StoreUnreachable
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.store.formats import (
    READABLE_FORMATS,
    RECORD_KEYS,
    array_specs,
    check_record,
    expected_metadata,
    unsound_metadata,
)

CACHE_ARRAYS = ("depth", "done", "clipped", "ids")


def _key(group: zarr.Group, *parts: str) -> str:
    return "/".join((group.path, *parts)) if group.path else "/".join(parts)


def unsound_arrays(group: zarr.Group, *, location: str) -> dict[str, str]:
    """Array name -> what is wrong with its ``zarr.json``: missing, unreadable, or edited (not as
    the group's store format defines it, checked against the group's record where it has one).
    A record of impossible sizes is refused (StoreError): nothing can be rebuilt from it."""
    attrs = dict(group.attrs)
    if set(RECORD_KEYS) <= attrs.keys() and attrs["tiekd_store_format"] in READABLE_FORMATS:
        check_record(attrs, location=location)
        return unsound_metadata(group, expected_metadata(attrs))
    return dict.fromkeys(lost_arrays(group), "missing or corrupt")


def lost_arrays(group: zarr.Group) -> list[str]:
    """Names of the group's arrays whose ``zarr.json`` is missing or unreadable."""
    lost = []
    for name in CACHE_ARRAYS:
        try:
            if not isinstance(group[name], zarr.Array):
                lost.append(name)
        except (KeyError, ValueError, TypeError):
            lost.append(name)
    return lost


def rebuild_metadata(group: zarr.Group, names: list[str], *, location: str) -> None:
    """Write the ``zarr.json`` of arrays ``names`` as the group's creation made them; chunks are
    left untouched. Refused for a group whose creation never finished (nothing is recorded)."""
    attrs = dict(group.attrs)
    if "created" not in attrs:
        raise StoreError(f"{location} never finished its creation; remove it with `tiekd cache rm` and re-run")
    shape = int(attrs["n_frames"]), tuple(attrs["crop"]), int(attrs["frames_per_shard"])
    specs = array_specs(*shape, store_format=attrs["tiekd_store_format"])
    template = zarr.open_group(MemoryStore(), mode="w", zarr_format=3)
    prototype = default_buffer_prototype()
    for name in names:
        template.create_array(name, **specs[name])
        document = sync(template.store.get(f"{name}/zarr.json", prototype))
        sync(group.store.set(_key(group, name, "zarr.json"), document))


def damaged_frames(cache: TeacherCache) -> dict[int, str]:
    """Frame -> the reason, for every frame marked done whose map does not read back sound."""
    damaged = {}
    for i in np.flatnonzero(cache.done).tolist():
        try:
            unwritten = not cache.depth(i).all()
        except StoreUnreachable:
            raise  # the server went away: no frame is known to be damaged
        except StoreError as e:
            damaged[i] = e.message
            continue
        if unwritten:  # quantise() never stores 0 (format 1 frames carry no checksum)
            damaged[i] = f"frame {i} of {cache.location} is marked done but has unwritten pixels"
    return damaged


def unmark(group: zarr.Group, frames: list[int]) -> list[int]:
    """Mark ``frames`` not done; remove the shard files of which every stored frame is among them.

    Returns the frames marked not done (those given plus the rest of removed shards)."""
    done_array, depth = group["done"], group["depth"]
    done = done_array[:]
    per_shard = int(depth.shards[0])
    unmarked = set(frames)
    for shard in sorted({i // per_shard for i in frames}):
        members = range(shard * per_shard, min((shard + 1) * per_shard, len(done)))
        if all(i in unmarked for i in members if done[i]):
            sync(group.store.delete(_key(group, "depth", depth.metadata.encode_chunk_key((shard, 0, 0)))))
            unmarked.update(i for i in members if done[i])
    for i in sorted(unmarked):
        done_array[i] = False
    if "completed" in group.attrs:
        del group.attrs["completed"]
    return sorted(unmarked)
