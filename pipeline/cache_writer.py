"""Writing a teacher cache: create or resume a teacher/split group and store maps into it.

See :mod:`tiekd.pipeline.cache` for the layout. Writes go depth first, then the clip count, then
the completion mask, so a frame marked done always has its map. A run that is killed loses at
most the frames it had not yet marked; running it again continues with the frames still missing.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections import deque
from pathlib import Path

import numpy as np
import zarr
from zarr.errors import ContainsArrayError, ContainsGroupError

import tiekd
from tiekd.pipeline.cache import (
    DEPTH_COMPRESSOR,
    DEPTH_FILTERS,
    DEPTH_SCALE,
    FRAMES_PER_SHARD,
    STORE_FORMAT,
    CacheSpec,
    _now,
    _open_root,
    contiguous_runs,
    quantise,
)
from tiekd.pipeline.errors import StoreError


CREATE_ATTEMPTS = 5
"""Processes that start on one new store at once (``--shard``) race to create its metadata.
Creation is idempotent, so the process that loses a race retries and opens what the other made."""
CREATE_BACKOFF_SECONDS = 0.1


def _check_writable(path: str) -> None:
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


def _require_array(group: zarr.Group, name: str, **kwargs) -> zarr.Array:
    """Create an array, or open the one a concurrent or earlier writer created with the same spec."""
    try:
        return group.create_array(name, **kwargs)
    except ContainsArrayError:
        array = group[name]
        if array.shape != kwargs["shape"]:
            raise StoreError(f"array {name} in the store has shape {array.shape}, expected {kwargs['shape']}") from None
        return array


def _create_arrays(group: zarr.Group, ids: list[str], crop: tuple[int, int], frames_per_shard: int) -> None:
    n = len(ids)
    _require_array(
        group,
        "depth",
        shape=(n, *crop),
        dtype="uint16",
        fill_value=0,
        chunks=(1, *crop),
        shards=(frames_per_shard, *crop),
        filters=DEPTH_FILTERS,
        compressors=DEPTH_COMPRESSOR,
    )
    _require_array(group, "done", shape=(n,), dtype="bool", fill_value=False, chunks=(frames_per_shard,))
    _require_array(group, "clipped", shape=(n,), dtype="int32", fill_value=0, chunks=(frames_per_shard,))
    id_array = _require_array(group, "ids", shape=(n,), dtype=str, chunks=(n,))
    id_array[:] = np.array(ids, dtype=object)


class CacheWriter:
    """One teacher/split group opened for writing."""

    def __init__(self, group: zarr.Group, *, location: str):
        self._group = group
        self.location = location
        self._depth = group["depth"]
        self._done = group["done"]
        self._clipped = group["clipped"]
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
    ) -> CacheWriter:
        """Open ``path/teacher/split`` for writing, creating it if needed.

        An existing group made with another spec is refused with the differences, unless
        ``overwrite``, which deletes that group (and only that group) first.
        """
        path = str(path)
        _check_writable(path)
        for attempt in range(CREATE_ATTEMPTS):
            try:
                return cls._create_or_resume_once(
                    path, teacher=teacher, split=split, spec=spec, ids=ids, extra_attrs=extra_attrs,
                    overwrite=overwrite, frames_per_shard=frames_per_shard,
                )
            except (ContainsGroupError, ContainsArrayError) as e:
                if attempt == CREATE_ATTEMPTS - 1:
                    raise StoreError(f"could not create {path}/{teacher}/{split} ({e}); run the command again") from e
                time.sleep(CREATE_BACKOFF_SECONDS * (attempt + 1))

    @classmethod
    def _create_or_resume_once(
        cls, path: str, *, teacher: str, split: str, spec: CacheSpec, ids: list[str], extra_attrs: dict,
        overwrite: bool, frames_per_shard: int,
    ) -> CacheWriter:
        root = _open_root(path, mode="a")
        if "tiekd_store_format" not in root.attrs:
            root.attrs["tiekd_store_format"] = STORE_FORMAT
        teacher_group = root.require_group(teacher)
        location = f"{path}/{teacher}/{split}"
        if split in teacher_group:
            cls._check_existing(teacher_group, split, spec, ids, overwrite=overwrite, location=location)
        if isinstance(teacher_group.get(split), zarr.Array):
            raise StoreError(f"{location} is an array, not a tiekd cache group; pass --overwrite")
        group = teacher_group.require_group(split)
        _create_arrays(group, ids, spec.crop, frames_per_shard)
        if "created" not in group.attrs:
            group.attrs.update(
                spec.to_attrs()
                | extra_attrs
                | {
                    "tiekd_store_format": STORE_FORMAT,
                    "tiekd_version": tiekd.__version__,
                    "depth_dtype": "uint16",
                    "depth_scale": DEPTH_SCALE,
                    "depth_unit": "m",
                    "frames_per_shard": frames_per_shard,
                    "n_frames": len(ids),
                    "created": _now(),
                }
            )
        return cls(group, location=location)

    @staticmethod
    def _check_existing(
        parent: zarr.Group, split: str, spec: CacheSpec, ids: list[str], *, overwrite: bool, location: str
    ) -> None:
        attrs = dict(parent[split].attrs)
        if overwrite:
            del parent[split]
            return
        if "created" not in attrs:
            return  # an earlier run stopped while creating it: creation is idempotent
        differences = spec.differences(CacheSpec.from_attrs(attrs))
        if attrs.get("tiekd_store_format") != STORE_FORMAT:
            differences.insert(0, f"store format {attrs.get('tiekd_store_format')!r} vs {STORE_FORMAT}")
        if differences:
            raise StoreError(
                f"{location} was made differently ({'; '.join(differences)}); "
                "use another --name or --split-name, or pass --overwrite to replace it"
            )

    def pending(self, frames: list[int]) -> list[int]:
        """Those of ``frames`` whose maps are not stored yet, in order."""
        done = self._done[:]
        return [i for i in frames if not done[i]]

    def write(self, indices: list[int], depth: np.ndarray, clipped: np.ndarray) -> None:
        """Store maps of frames ``indices`` (sorted): depth (B, H, W) metres, clipped (B,) counts."""
        values = quantise(depth)
        for start, stop, offset in contiguous_runs(indices, frames_per_shard=self.frames_per_shard):
            rows = slice(offset, offset + stop - start)
            self._depth[start:stop] = values[rows]
            self._clipped[start:stop] = clipped[rows]
            self._done[start:stop] = True

    def finish(self) -> bool:
        """Record completion (time, clip total) once every frame is stored; True if complete."""
        done = self._done[:]
        if not done.all():
            return False
        self._group.attrs.update({"completed": _now(), "clipped_pixels": int(self._clipped[:].sum())})
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

    def submit(self, indices: list[int], depth: np.ndarray, clipped: np.ndarray) -> None:
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._writer.write, indices, depth, clipped))

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
