"""A bounded local cache of remote stores' shard files, so that epochs after the first read from disk.

A frame of a remote store (``s3://``, ``http(s)://``) whose shard is settled (every frame of it was
done when the store was opened, so the shard is never written again) is read from a local copy of
the whole shard file, fetched once through zarr's store (one GET) into ``TIEKD_SHARD_CACHE``
(default ``~/.cache/tiekd/shards``), and decoded by :class:`~tiekd.pipeline.store.reader.FrameReader`,
which checks the shard index's and the frame's CRC32C on every read. A copy that fails a check
(damaged on disk, or evicted by another process while in use) is dropped and fetched again; a
fresh copy that fails names the remote object. Frames of shards still being written are read
through zarr, uncached.

Several processes of one node share the folder: a copy is written to a temporary file and
``os.replace``d into place (a reader sees the whole file or none), and eviction, least recently
used first (a read touches the copy's mtime) down to ``TIEKD_SHARD_CACHE_GB``, runs under a
``flock`` of the folder's lock file. Copies are named by the store's location, the group's
generation (a group made again with ``--overwrite`` never reads an older group's copies) and the
shard key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import uuid
from pathlib import Path

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, ObjectStore

from tiekd.pipeline.errors import StoreError, StoreUnreachable
from tiekd.pipeline.files import os_reason
from tiekd.pipeline.store.formats import damaged_frame
from tiekd.pipeline.store.reader import FrameReader
from tiekd.pipeline.store.remote import lost_connection

FOLDER_VARIABLE = "TIEKD_SHARD_CACHE"
"""The cache's folder (default ``$XDG_CACHE_HOME/tiekd/shards``, else ``~/.cache/tiekd/shards``)."""
SIZE_VARIABLE = "TIEKD_SHARD_CACHE_GB"
"""The cache's bound in GB (10^9 bytes); 0 turns it off (every frame read through zarr)."""
DEFAULT_GB = 20.0
"""Room for the whole KITTI Eigen training set's maps (23,158 frames at about 0.2 MB) several times over."""
STALE_TEMPORARY_SECONDS = 3600
"""A temporary file this old belongs to a fetch that was killed: eviction removes it."""


def cache_folder() -> Path:
    if os.environ.get(FOLDER_VARIABLE):
        return Path(os.environ[FOLDER_VARIABLE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tiekd" / "shards"


def cache_bytes() -> int:
    """The bound from ``TIEKD_SHARD_CACHE_GB``; a StoreError for a value that is no number."""
    text = os.environ.get(SIZE_VARIABLE, str(DEFAULT_GB))
    try:
        gigabytes = float(text)
    except ValueError:
        raise StoreError(
            f"{SIZE_VARIABLE}={text!r} is not a number of GB; set it to e.g. 20, or 0 for no cache"
        ) from None
    return int(max(gigabytes, 0) * 1e9)


class ShardCache:
    """Whole shard files in one folder, at most ``max_bytes`` of them, least recently used evicted."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes

    def file(self, name: str, fetch) -> tuple[Path, bool]:
        """The local copy ``name`` and whether it was fetched now: ``fetch()`` gives its bytes (or
        raises FileNotFoundError where the remote object is missing)."""
        path = self.folder / name
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # a hit: most recently used
            return path, False
        data = fetch()
        temporary = self.folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
            os.replace(temporary, path)
        except OSError as e:  # read-only, full, no permission: say which setting picks the folder
            raise StoreUnreachable(
                f"the local shard cache {self.folder} cannot be written ({os_reason(e)}); set {FOLDER_VARIABLE} to a "
                f"writable folder with room, or {SIZE_VARIABLE}=0 to read without a cache"
            ) from e
        finally:
            temporary.unlink(missing_ok=True)
        self._evict(keep=path)
        return path, True

    def drop(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def _evict(self, *, keep: Path) -> None:
        """Delete the least recently used copies (never ``keep``) until the folder fits its bound."""
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries, total, now = [], 0, time.time()
            for entry in os.scandir(self.folder):
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    if entry.name.endswith(".tmp") and now - stat.st_mtime > STALE_TEMPORARY_SECONDS:
                        os.unlink(entry.path)
                    elif entry.name.endswith(".shard"):
                        entries.append((stat.st_mtime, stat.st_size, entry.path))
                        total += stat.st_size
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if path != str(keep):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    total -= size


NOT_REMOTE = {"file", "local", "memory"}
"""fsspec protocols whose bytes are already on this machine (file:// stores are read through zarr, as before)."""


def _remote(store) -> bool:
    """Whether zarr reads ``store`` over a network."""
    if isinstance(store, ObjectStore):
        return True
    return isinstance(store, FsspecStore) and not NOT_REMOTE & set(np.atleast_1d(store.fs.protocol))


def cached_reader(array: zarr.Array, *, done: np.ndarray, location: str, generation: str,
                  kind: type[CachedFrameReader] | None = None) -> CachedFrameReader | None:  # fmt: skip
    """A reader of a remote tiekd array through the shard cache (``kind``: a depth array's
    :class:`CachedFrameReader` by default); None where the array is local, not the layout ``kind``
    reads, or the cache is off (``TIEKD_SHARD_CACHE_GB=0``)."""
    kind = kind or CachedFrameReader
    if isinstance(array.store, LocalStore) or not _remote(array.store) or not kind.reads(array):
        return None
    max_bytes = cache_bytes()
    if max_bytes == 0:
        return None
    cache = ShardCache(cache_folder(), max_bytes)
    return kind(array, done=done, location=location, generation=generation, cache=cache)


class CachedFrameReader(FrameReader):
    """Frames of a remote store's depth array, read from local copies of its settled shards."""

    def __init__(self, array: zarr.Array, *, done: np.ndarray, location: str, generation: str, cache: ShardCache):
        n_shards = -(-array.shape[0] // array.shards[0])
        padded = np.ones(n_shards * array.shards[0], bool)  # frames past the end are never written
        padded[: len(done)] = done
        settled = padded.reshape(n_shards, -1).all(axis=1)
        super().__init__(array, shard_path=self._local_copy, settled=settled, location=location)
        self._array = array
        self._cache = cache
        self._generation = generation
        self._fresh = False
        """Whether the last copy opened was fetched just now (then a failed check is the remote object's)."""

    def _key(self, shard: int) -> str:
        return f"{self._array.path}/{self._array.metadata.encode_chunk_key((shard,) + (0,) * (self._array.ndim - 1))}"

    def _name(self, shard: int) -> str:
        identity = f"{self._location}\n{self._generation}\n{self._key(shard)}"
        return hashlib.sha256(identity.encode()).hexdigest()[:40] + ".shard"

    def _fetch(self, shard: int) -> bytes:
        try:
            value = sync(self._array.store.get(self._key(shard), default_buffer_prototype()))
        except Exception as e:
            lost = lost_connection(self._location, e)
            if lost is None:
                raise
            raise lost from e
        if value is None:
            raise FileNotFoundError(self._key(shard))
        return value.to_bytes()

    def _local_copy(self, shard: int) -> Path:
        self._fresh = True  # a fetch that fails (server unreachable) is not retried
        path, self._fresh = self._cache.file(self._name(shard), lambda: self._fetch(shard))
        return path

    def settled(self, i: int) -> bool:
        """Whether frame ``i``'s shard was settled when the reader was made (then it reads from a copy)."""
        return bool(self._settled[(i % self.frames) // self.frames_per_shard])

    def _from_copy(self, i: int, read):
        """``read()`` of frame ``i`` from its shard's local copy; a copy that fails its checks is
        fetched again once, unless it was fetched just now (then the remote object is damaged)."""
        self._fresh = False
        try:
            return read()
        except StoreError:
            if self._fresh:
                raise
        shard = (i % self.frames) // self.frames_per_shard
        self._cache.drop(self._name(shard))  # damaged on disk, or evicted under us: fetch it again
        self._indices.pop(shard, None)
        return read()

    def _decoded(self, i: int, scale, *, stored: bool) -> np.ndarray:
        if not self.settled(i):
            return self._through_zarr(i % self.frames, scale, stored=stored)
        return self._from_copy(i, lambda: FrameReader._decoded(self, i, scale, stored=stored))

    def _through_zarr(self, i: int, scale, *, stored: bool) -> np.ndarray:
        """Frame ``i`` of a shard still being written, read through zarr (checked by its CRC32C codec)."""
        try:
            values = self._array[i]
        except StoreError:
            raise
        except Exception as e:  # zarr's codecs fail in many ways on damaged bytes
            raise lost_connection(self._location, e) or self._damaged(i, f"{type(e).__name__}: {e}") from e
        if stored and not values.all():  # quantise() never stores 0
            raise self._damaged(i, "it is marked done but its map is missing")
        return np.multiply(values, scale, dtype=scale.dtype)

    def _damaged(self, i: int, why: str) -> StoreError:
        key = self._array.metadata.encode_chunk_key((i // self.frames_per_shard,) + (0,) * (self._array.ndim - 1))
        shard_file = f"{self._location}/{self._array.basename}/{key}"
        return damaged_frame(self._location, i, shard_file, why)
