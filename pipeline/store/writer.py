"""Writing a teacher cache: create or resume a teacher/split group and store maps into it.

See :mod:`tiekd.pipeline.store.cache` for the layout. Writes go depth first, then the clip count, then
the completion mask, so a frame marked done always has its map. A run that is killed loses at
most the frames it had not yet marked; running it again continues with the frames still missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from zarr.core.sync import sync
from zarr.errors import ContainsArrayError, ContainsGroupError
from zarr.storage import LocalStore

import tiekd
from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import (
    DEPTH_SCALE,
    FRAMES_PER_SHARD,
    CacheSpec,
    contiguous_runs,
    open_root,
    plain_path,
    quantise,
    utc_now,
)
from tiekd.pipeline.store.formats import (
    READABLE_FORMATS,
    STORE_FORMAT,
    array_specs,
    check_group_name,
    check_readable_format,
    lost_metadata,
    open_member,
)
from tiekd.pipeline.store.lease import check_held, creation_lock, exclusive_group, hold_group

CREATE_ATTEMPTS = 5
"""Processes that start on one new store at once (``--shard``) race to create its metadata.
Creation is idempotent, so the process that loses a race retries and opens what the other made."""
CREATE_BACKOFF_SECONDS = 0.1


def check_writable(path: str) -> None:
    """Refuse a local target that cannot be written, before anything is touched."""
    if "://" in path:
        return
    existing = Path(path)
    while not existing.exists():
        existing = existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing if existing.is_dir() else existing.parent):
            pass
    except OSError as e:
        raise StoreError(f"cannot write to --out {path} ({e.strerror}); choose a writable location") from e


def remove_group(parent: zarr.Group, name: str, *, location: str) -> None:
    """Delete group ``name`` of ``parent`` (--overwrite), refused while another process writes it.
    In a local store its folder is first renamed aside, so a reader sees it gone at once, never half
    deleted (a frame of it would read as damaged rather than removed)."""
    store = parent.store
    if not isinstance(store, LocalStore):
        with exclusive_group(location):  # S3's lease objects go with the group
            del parent[name]
        return
    root = Path(store.root)
    aside = root / f".tiekd-removing-{uuid.uuid4().hex}"
    with exclusive_group(location):
        os.rename(root / parent.path / name, aside)
    shutil.rmtree(aside)


def _holds_no_frame(group: zarr.Group) -> bool:
    """Whether ``group`` has no frame stored (a first run that failed before its first batch)."""
    try:
        return not bool(group["done"][:].any())
    except (KeyError, ValueError, TypeError):
        return False  # unreadable: leave it to verify --repair, never delete it


class _StoreBeingCreated(Exception):
    """Another process is part-way through creating the store's root: retry shortly."""


def _check_target(path: str) -> None:
    """Refuse a local ``--out`` that is neither new, nor empty, nor a tiekd store (never adopt,
    and never add metadata over, another program's files or a zarr v2 store)."""
    if "://" in path or not Path(path).exists():
        return
    target = Path(path)
    if not target.is_dir():
        raise StoreError(f"--out {path} is a file, not a tiekd store; choose a new or empty directory")
    names = {p.name for p in target.iterdir()}
    if not names:
        return
    if names & {".zgroup", ".zarray", ".zattrs"}:
        raise StoreError(f"--out {path} is a zarr v2 store, not a tiekd store; choose a new or empty directory")
    try:
        root = json.loads((target / "zarr.json").read_bytes())
    except FileNotFoundError:
        raise StoreError(f"--out {path} is a non-empty directory that is not a tiekd store; choose a new or empty one") from None
    except ValueError as e:
        raise _StoreBeingCreated(f"{path}/zarr.json is not readable yet") from e
    if root.get("node_type") != "group" or "tiekd_store_format" not in root.get("attributes", {}):
        raise StoreError(f"--out {path} is a zarr store that tiekd did not make; choose a new or empty directory")


async def _first_key(store, prefix: str) -> str | None:
    async for key in store.list_prefix(prefix):
        return key
    return None


def _require_array(group: zarr.Group, name: str, *, location: str, **kwargs) -> zarr.Array:
    """Open the array an earlier or concurrent writer created with the same spec, or create it.

    Array metadata is never created over existing chunks: that would re-read them with another
    layout (lost or corrupt ``zarr.json``, issue 9); ``tiekd cache verify --repair`` rebuilds it.
    """
    prefix = f"{group.path}/{name}/" if group.path else f"{name}/"
    try:
        if sync(group.store.exists(prefix + "zarr.json")):
            array = open_member(group, name, location=location)
        elif sync(_first_key(group.store, prefix)) is not None:
            raise lost_metadata(location, name)
        else:
            try:
                return group.create_array(name, **kwargs)
            except ContainsArrayError:
                array = open_member(group, name, location=location)
    except StoreError as e:
        if "created" not in group.attrs:  # another process is writing this metadata right now
            raise _StoreBeingCreated(e.message) from e
        raise
    if array.shape != kwargs["shape"]:
        raise StoreError(f"array {name} of {location} has shape {array.shape}, expected {kwargs['shape']}")
    return array


def _create_arrays(group: zarr.Group, ids: list[str], crop: tuple[int, int], *, frames_per_shard: int,
                   store_format: int, location: str, sources: list[str] | None = None,
                   per_frame: dict[str, str] | None = None) -> None:
    """The group's arrays, ids written last; ``sources``: one JSON text a frame saying what it was
    made from (image sources, ``tiekd.data.sources``), kept in array ``sources`` beside ``ids``;
    ``per_frame``: more (N,) arrays by name and dtype, written with the maps (an alignment's fits)."""
    for name, dtype in (per_frame or {}).items():
        _require_array(group, name, location=location, shape=(len(ids),), dtype=dtype, chunks=(frames_per_shard,),
                       fill_value=0)  # fmt: skip
    if sources is not None:
        kept = _require_array(group, "sources", location=location, shape=(len(ids),), dtype=str, chunks=(len(ids),))
        kept[:] = np.array(sources, dtype=object)
    for name, kwargs in array_specs(len(ids), crop, frames_per_shard, store_format).items():
        array = _require_array(group, name, location=location, **kwargs)
    array[:] = np.array(ids, dtype=object)  # the ids, last


class CacheWriter:
    """One teacher/split group opened for writing."""

    def __init__(self, group: zarr.Group, *, location: str):
        self._group = group
        self.location = location
        self._lease = hold_group(location)
        """The group lease, held shared while this writer lives (see :mod:`tiekd.pipeline.store.lease`)."""
        self._depth = open_member(group, "depth", location=location)
        self._done = open_member(group, "done", location=location)
        self._clipped = open_member(group, "clipped", location=location)
        self.frames_per_shard = int(self._depth.shards[0])
        """Frames per shard file, as the store was created."""

    @classmethod
    def create_or_resume(
        cls,
        path: str,
        *,
        teacher: str,
        split: str,
        spec: CacheSpec,
        ids: list[str],
        extra_attrs: dict,
        overwrite: bool = False,
        frames_per_shard: int = FRAMES_PER_SHARD,
        store_format: int = STORE_FORMAT,
        sources: list[str] | None = None,
        per_frame: dict[str, str] | None = None,
    ) -> CacheWriter:
        """Open ``path/teacher/split`` for writing, creating it if needed.

        An existing group made with another spec is refused with the differences, unless
        ``overwrite``, which deletes that group (and only that group) first. ``frames_per_shard``
        and ``store_format`` (an older one only to compare formats, as bench/ does) apply to a new
        group; an existing one keeps its own.
        """
        path = plain_path(path)
        check_group_name(teacher, flag="--name")
        check_group_name(split, flag="--split-name")
        check_readable_format(store_format, location="store_format")
        check_writable(path)
        with creation_lock(path):
            return cls._create_or_resume_retrying(
                path, teacher=teacher, split=split, spec=spec, ids=ids, extra_attrs=extra_attrs,
                overwrite=overwrite, layout={"frames_per_shard": frames_per_shard, "store_format": store_format,
                                             "sources": sources, "per_frame": per_frame},
            )  # fmt: skip

    @classmethod
    def _create_or_resume_retrying(
        cls, path: str, *, teacher: str, split: str, spec: CacheSpec, ids: list[str], extra_attrs: dict,
        overwrite: bool, layout: dict,
    ) -> CacheWriter:
        """:meth:`_create_or_resume_once`, retried while another process (a remote store's, or one
        without the lock) is part-way through creating the same metadata."""
        for attempt in range(CREATE_ATTEMPTS):
            try:
                _check_target(path)
                return cls._create_or_resume_once(
                    path, teacher=teacher, split=split, spec=spec, ids=ids, extra_attrs=extra_attrs,
                    overwrite=overwrite, layout=layout,
                )
            except (ContainsGroupError, ContainsArrayError, _StoreBeingCreated) as e:
                if attempt == CREATE_ATTEMPTS - 1 and isinstance(e, _StoreBeingCreated):
                    raise StoreError(str(e)) from e
                if attempt == CREATE_ATTEMPTS - 1:
                    raise StoreError(f"could not create {path}/{teacher}/{split} ({e}); run the command again") from e
                time.sleep(CREATE_BACKOFF_SECONDS * (attempt + 1))

    @classmethod
    def _create_or_resume_once(
        cls, path: str, *, teacher: str, split: str, spec: CacheSpec, ids: list[str], extra_attrs: dict,
        overwrite: bool, layout: dict,
    ) -> CacheWriter:
        root = open_root(path, mode="a", attributes={"tiekd_store_format": STORE_FORMAT})
        if "tiekd_store_format" not in root.attrs:
            if any(True for _ in root.members()):
                raise StoreError(f"--out {path} is a zarr store that tiekd did not make; choose a new or empty one")
            root.attrs["tiekd_store_format"] = STORE_FORMAT
        teacher_group = root.require_group(teacher)
        location = f"{path}/{teacher}/{split}"
        if split in teacher_group:
            cls._check_existing(teacher_group, split, spec, ids, overwrite=overwrite, location=location)
        if isinstance(teacher_group.get(split), zarr.Array):
            raise StoreError(f"{location} is an array, not a tiekd cache group; pass --overwrite")
        group = teacher_group.require_group(split)
        frames_per_shard = int(group.attrs.get("frames_per_shard", layout["frames_per_shard"]))  # a group keeps its own
        store_format = int(group.attrs.get("tiekd_store_format", layout["store_format"]))
        _create_arrays(group, ids, spec.crop, frames_per_shard=frames_per_shard, store_format=store_format,
                       location=location, sources=layout.get("sources"), per_frame=layout.get("per_frame"))
        if "created" not in group.attrs:
            group.attrs.update(
                spec.to_attrs()
                | extra_attrs
                | {
                    "tiekd_store_format": store_format,
                    "tiekd_version": tiekd.__version__,
                    "depth_dtype": "uint16",
                    "depth_scale": DEPTH_SCALE,
                    "depth_unit": "m",
                    "frames_per_shard": frames_per_shard,
                    "n_frames": len(ids),
                    "created": utc_now(),
                    "generation": uuid.uuid4().hex,
                }
            )
        return cls(group, location=location)

    @staticmethod
    def _check_existing(
        parent: zarr.Group, split: str, spec: CacheSpec, ids: list[str], *, overwrite: bool, location: str
    ) -> None:
        attrs = dict(parent[split].attrs)
        if overwrite:
            remove_group(parent, split, location=location)
            return
        if "created" not in attrs:
            return  # an earlier run stopped while creating it: creation is idempotent
        differences = spec.differences(CacheSpec.from_attrs(attrs))
        if attrs.get("tiekd_store_format") not in READABLE_FORMATS:  # readable ones continue in their own format
            differences.insert(0, f"store format {attrs.get('tiekd_store_format')!r} vs {STORE_FORMAT}")
        if differences and _holds_no_frame(parent[split]):
            with contextlib.suppress(StoreError):  # while another run writes it, refused as below
                remove_group(parent, split, location=location)  # a failed first run's group: nothing lost
                return
        if differences:
            raise StoreError(
                f"{location} was made differently ({'; '.join(differences)}); "
                "use another --name or --split-name, or pass --overwrite to replace it"
            )

    def pending(self, frames: list[int]) -> list[int]:
        """Those of ``frames`` whose maps are not stored yet, in order."""
        done = self._done[:]
        return [i for i in frames if not done[i]]

    def write(self, indices: list[int], depth: np.ndarray, clipped: np.ndarray, extras: dict | None = None) -> None:
        """Store maps of frames ``indices`` (sorted): depth (B, H, W) metres, clipped (B,) counts,
        ``extras``: (B,) values of the group's per-frame arrays by name."""
        check_held()  # a run whose S3 lease was taken over stops before writing
        values = quantise(depth)
        for start, stop, offset in contiguous_runs(indices, frames_per_shard=self.frames_per_shard):
            rows = slice(offset, offset + stop - start)
            self._depth[start:stop] = values[rows]
            for name, column in (extras or {}).items():
                open_member(self._group, name, location=self.location)[start:stop] = column[rows]
            self._clipped[start:stop] = clipped[rows]
            self._done[start:stop] = True

    def discard_if_empty(self) -> bool:
        """Remove this group if it holds no frame and no other process writes it (a first run that
        failed before storing anything leaves nothing behind); True if removed."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        if not _holds_no_frame(self._group):
            return False
        parent_path, _, name = self._group.path.rpartition("/")
        try:
            parent = zarr.open_group(store=self._group.store, path=parent_path, mode="r+", zarr_format=3)
            remove_group(parent, name, location=self.location)
        except StoreError:
            return False  # another writer holds it: it is theirs to fill
        return True

    def finish(self) -> bool:
        """Record completion (time, clip total) once every frame is stored; True if complete."""
        done = self._done[:]
        if not done.all():
            return False
        self._group.attrs.update({"completed": utc_now(), "clipped_pixels": int(self._clipped[:].sum())})
        return True


class BackgroundWriter:
    """Runs ``CacheWriter.write`` on one thread so compression and I/O overlap the teacher.

    One thread keeps writes to a shard in order; at most ``max_pending`` batches wait, so a slow
    filesystem applies back-pressure instead of filling memory.
    """

    def __init__(self, writer: CacheWriter, *, max_pending: int = 4):
        self._writer = writer
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiekd-cache-writer")
        self._pending: deque[Future] = deque()
        self._max_pending = max_pending

    def submit(self, indices: list[int], depth: np.ndarray, clipped: np.ndarray, extras: dict | None = None) -> None:
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._writer.write, indices, depth, clipped, extras))

    def close(self) -> None:
        """Wait for every queued write; re-raise the first failure."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
