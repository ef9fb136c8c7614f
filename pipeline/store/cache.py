"""The teacher cache: a Zarr v3 store of teacher depth maps, one group per teacher and split.

Layout of a store (local path or any fsspec URL)::

    STORE/                      root group, attrs {"tiekd_store_format": N} (pipeline/store/formats.py)
      <teacher>/<split>/        group whose attrs describe the cache (see ``CacheSpec``)
        depth    (N, H, W) uint16, value = round(depth_m * 256); one inner chunk per frame,
                 FRAMES_PER_SHARD frames per shard file; 0 = never written; from format 2 on
                 every frame carries a CRC32C that every read checks
        done     (N,) bool, one chunk per depth shard; set only after the frame's depth is stored
        clipped  (N,) int32, pixels of the frame clipped into [min_depth, max_depth]
        ids      (N,) str, the sample ids (RGB paths relative to the KITTI raw root), in split order

The completion mask is the resume marker: in zarr 3 a chunk that exists may still belong to a
shard another frame's write created, so chunk existence proves nothing. Every array that
writers touch is chunked on depth-shard boundaries, so processes that own disjoint shards
(``--shard I/N``) never write the same file.

Frames of a local store are read by ``reader.FrameReader`` (plain file reads, several times
faster than decoding the authors' PNG: README, Benchmarks), those of a remote store (``s3://``,
``http(s)://``) by the same reader from local copies of its shards (``shard_cache``); others through
zarr-python. ``s3://BUCKET/PATH`` stores are opened by ``s3.open_s3``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import zarr
from zarr.errors import ContainsArrayError, ContainsGroupError

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.formats import (
    GROUP_NAME,
    check_metadata,
    check_readable_format,
    child_groups,
    damaged_frame,
    open_member,
    read_whole,
    split_group_name,
)
from tiekd.pipeline.store.reader import FrameReader
from tiekd.pipeline.store.remote import check_byte_ranges, lost_connection
from tiekd.pipeline.store.s3 import is_s3, open_s3
from tiekd.pipeline.store.shard_cache import cached_reader

DEPTH_SCALE = 256
"""uint16 value = round(depth * 256): rounding error <= 1/512 m, within KITTI's own GT precision
(1/256 m), and 80 m -> 20480 leaves head-room below 65535."""

FRAMES_PER_SHARD = 32
"""Default frames per shard file: 23,158 KITTI training frames make 724 files instead of 23,158.
A store records its own value (attribute ``frames_per_shard``)."""


@dataclass(frozen=True)
class CacheSpec:
    """Everything that makes two caches interchangeable; stored as the split group's attrs."""

    teacher_spec: str
    """The --teacher spec the maps were made with, e.g. ``export:/models/adabins.pt2``."""
    teacher_sha256: str | None
    """SHA-256 of the teacher's weights file (None where the spec has no single file)."""
    split_sha256: str
    """SHA-256 of the split file's bytes."""
    crop: tuple[int, int]
    """(H, W) of the KB crop the maps are aligned with."""
    teacher_input: tuple[int, int] | None
    """(H, W) the teacher ran at, resized in and out; None = at the crop size."""
    flip_tta: bool
    """Whether maps average the teacher's prediction and its flipped-back flipped prediction."""
    min_depth: float
    max_depth: float
    dataset: str = "kitti"
    """The --dataset the maps were made for (stores from before the field were all KITTI)."""
    teacher_output: str = "metric"
    """What the teacher predicts: metric, or relative-depth / relative-inverse aligned per frame to
    a metric reference before storing (stores from before the field were all metric)."""

    def require_dataset(self, dataset: str, *, location: str) -> None:
        """Refuse to use maps made for another dataset (StoreError naming both)."""
        if self.dataset != dataset:
            raise StoreError(
                f"{location} holds maps cached for --dataset {self.dataset}, this run is --dataset {dataset}; "
                f"pass --dataset {self.dataset} or cache the teacher with --dataset {dataset}"
            )

    def differences(self, other: CacheSpec) -> list[str]:
        """Human-readable 'field: theirs vs ours' for every field that differs.

        Teachers are the same when their weights are: the same file under another path (a store
        moved, a shared filesystem mounted elsewhere) differs in ``teacher_spec`` alone.
        """
        ours, theirs = dataclasses.asdict(self), dataclasses.asdict(other)
        same_weights = self.teacher_sha256 is not None and self.teacher_sha256 == other.teacher_sha256
        same_kind = self.teacher_spec.partition(":")[0] == other.teacher_spec.partition(":")[0]
        ignored = {"teacher_spec"} if same_weights and same_kind else set()
        return [
            f"{k}: {theirs[k]!r} in the store vs {ours[k]!r} now"
            for k in ours
            if ours[k] != theirs[k] and k not in ignored
        ]

    def to_attrs(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_attrs(cls, attrs: dict) -> CacheSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in attrs.items() if k in fields}
        for key in ("crop", "teacher_input"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def quantise(depth: np.ndarray) -> np.ndarray:
    """Metres -> stored uint16. Values are clamped to >= 1 so 0 keeps meaning 'never written'."""
    return np.clip(np.rint(depth * DEPTH_SCALE), 1, np.iinfo(np.uint16).max).astype(np.uint16)


def dequantise(value: np.ndarray) -> np.ndarray:
    """Stored uint16 -> float32 metres (one pass: cast and scale together)."""
    return np.multiply(value, np.float32(1 / DEPTH_SCALE), dtype=np.float32)


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second (a group's "created" and "completed")."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


READ_ONLY_PROTOCOLS = ("http://", "https://")
"""Stores tiekd reads but never writes: a web server serves files, it does not take them."""


def plain_path(path: str | Path) -> str:
    """``file:///a/b.zarr`` -> ``/a/b.zarr``: where a store is written, a local store is one however
    it is spelled (fsspec's local file system would not create its folders)."""
    text = str(path)
    return text.removeprefix("file://") if text.startswith("file://") else text


def open_root(path: str, *, mode: str, attributes: dict | None = None) -> zarr.Group:
    """The store's root group; ``attributes`` are written with it where ``mode`` creates it.
    (A ``file://`` URL reads through zarr-python and fsspec, not :class:`FrameReader`.)"""
    path = str(path)
    if mode == "r":
        check_byte_ranges(path)
    elif path.startswith(READ_ONLY_PROTOCOLS):
        raise StoreError(f"{path} is an HTTP store, which tiekd only reads; write to a local path (or copy it there)")
    store = open_s3(path, read_only=mode == "r") if is_s3(path) else path
    try:
        return zarr.open_group(store, mode=mode, zarr_format=3, attributes=attributes)
    except ImportError as e:  # fsspec names the package its protocol needs
        raise StoreError(f"{path}: {e} (tiekd does not install it); or use a local path") from None
    except FileNotFoundError as e:
        raise StoreError(f"no teacher cache at {path}; create it with `tiekd cache-teacher --out {path}`") from e
    except PermissionError as e:
        raise StoreError(f"cannot write to {path} ({e}); choose a writable --out") from e
    except (ContainsGroupError, ContainsArrayError):
        raise  # another process is creating the store right now: the writer retries
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise StoreError(f"{path} is not a readable tiekd cache ({e})") from e


def _pick(group: zarr.Group, name: str | None, *, what: str, flag: str, path: str) -> str:
    """The one member name to use: the given one (found without listing the folder: a web server
    need not list), or the only one there is."""
    if name is not None and GROUP_NAME.fullmatch(name):
        with contextlib.suppress(KeyError, FileNotFoundError):
            if isinstance(group[name], zarr.Group):
                return name
    names = list(child_groups(group, location=path))
    if name is not None:
        if name not in names:
            raise StoreError(f"{path} holds no {what} {name!r} (it has: {', '.join(names) or 'none'}); fix {flag}")
        return name
    if len(names) != 1:
        raise StoreError(f"{path} holds {len(names)} {what}s ({', '.join(names) or 'none'}); choose one with {flag}")
    return names[0]


class TeacherCache:
    """Read-only view of one teacher's maps over one split.

    >>> c = TeacherCache.open("kitti.zarr")            # doctest: +SKIP
    >>> c.ids[0], len(c), c.complete, c.depth(0).shape  # doctest: +SKIP
    ('2011_09_26/.../0000000069.png', 652, True, (352, 1216))
    """

    def __init__(self, group: zarr.Group, *, location: str):
        self._group = group
        self.location = location
        """``STORE/teacher/split``, for messages."""
        check_metadata(group, location=location)
        self._depth = open_member(group, "depth", location=location)
        self.ids: list[str] = [str(s) for s in read_whole(group, "ids", location=location)]
        """Sample ids (RGB paths relative to the KITTI raw root) in split order."""
        self.index = {sample_id: i for i, sample_id in enumerate(self.ids)}
        """Sample id -> frame index."""
        self._done_seen = self.done
        """(N,) bool: the completion mask as last read; re-read for a frame it does not list."""
        self._reader = FrameReader.for_array(self._depth, done=self._done_seen, location=location) or cached_reader(
            self._depth, done=self._done_seen, location=location, generation=generation(dict(group.attrs))
        )
        """Direct reads of local stores (``pipeline/store/reader.py``) or of local copies of a remote store's
        shards (``pipeline/store/shard_cache.py``); None = through zarr."""
        self.generation = generation(dict(group.attrs))
        """The group's generation when it was opened (see :meth:`require_unchanged`)."""

    @classmethod
    def open(cls, path: str | Path, teacher: str | None = None, split: str | None = None) -> TeacherCache:
        """Open ``path`` read-only; ``teacher`` and ``split`` may be omitted where the store holds one."""
        path = str(path)
        root = open_root(path, mode="r")
        teacher = _pick(root, teacher, what="teacher", flag="--teacher", path=path)
        split = _pick(root[teacher], split, what="split", flag="--split-name", path=f"{path}/{teacher}")
        group = root[teacher][split]
        check_readable_format(group.attrs.get("tiekd_store_format"), location=f"{path}/{teacher}/{split}")
        return cls(group, location=f"{path}/{teacher}/{split}")

    @classmethod
    def open_for_split(
        cls, path: str | Path, teacher: str | None, split_name: str | None, split_file: str | Path
    ) -> TeacherCache:
        """Open the group of a split: ``split_name`` if given, else the one named after the split
        file's stem if there is one, else the only split of the teacher."""
        if split_name is None:
            root = open_root(str(path), mode="r")
            teacher = _pick(root, teacher, what="teacher", flag="--teacher", path=str(path))
            if split_group_name(split_file) in root[teacher]:
                split_name = split_group_name(split_file)
        return cls.open(path, teacher, split_name)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def attrs(self) -> dict:
        """The cache's metadata (teacher, preprocessing, depth range and scale, split, versions)."""
        return dict(self._group.attrs)

    @property
    def spec(self) -> CacheSpec:
        return CacheSpec.from_attrs(self.attrs)

    @property
    def depth_shape(self) -> tuple[int, ...]:
        """(N, H, W) of the group's depth array, as its metadata says."""
        return tuple(self._depth.shape)

    @property
    def frames_per_shard(self) -> int:
        return int(self._depth.shards[0])

    @property
    def done(self) -> np.ndarray:
        """(N,) bool: frames whose maps are stored."""
        return read_whole(self._group, "done", location=self.location)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def sources(self) -> list[dict] | None:
        """What each frame was made from, for groups of image sources (``cache-teacher --images``):
        one dict a frame (``id``, ``path``, video ``frame`` / ``pts`` / ``seconds``, ``size``,
        ``sha256`` of its pixels); None for a group of a split file."""
        if "sources" not in self._group:
            return None
        return [json.loads(str(text)) for text in read_whole(self._group, "sources", location=self.location)]

    def per_frame(self, name: str) -> np.ndarray:
        """(N,) values of a per-frame array, e.g. an aligned group's ``align_scale``."""
        return read_whole(self._group, name, location=self.location)

    @property
    def clipped(self) -> np.ndarray:
        """(N,) int32: pixels per frame that were clipped into [min_depth, max_depth]."""
        return read_whole(self._group, "clipped", location=self.location)

    def require_unchanged(self) -> None:
        """Refuse, in one line, a group removed (``cache rm``) or made again in its place
        (``cache-teacher --overwrite``) since it was opened: its maps are gone or another teacher's.
        Reads the group's metadata afresh (one small file, about a millisecond on a local disk)."""
        try:
            fresh = zarr.open_group(store=self._group.store, path=self._group.path, mode="r", zarr_format=3)
            now = generation(dict(fresh.attrs))
        except (FileNotFoundError, KeyError, ValueError, OSError, zarr.errors.GroupNotFoundError):
            raise StoreError(
                f"{self.location} was removed while in use (cache rm or cache-teacher --overwrite); "
                "make it again, then start or --resume the run"
            ) from None
        if now != self.generation:
            raise StoreError(
                f"{self.location} was replaced while in use (cache-teacher --overwrite): its maps are not the ones "
                "this run started with; keep a store group unchanged while a run reads it"
            )

    def depth(self, i: int) -> np.ndarray:
        """Teacher depth of frame ``i``: float32 HxW metres at the crop.

        A frame not stored yet, or whose bytes fail their checksum, is a ``StoreError``.
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} is out of range for {len(self)} frames")
        i %= len(self)
        if not self._done_seen[i]:
            self._done_seen = self.done  # a store being filled: the frame may be done by now
            if not self._done_seen[i]:
                missing = int((~self._done_seen).sum())
                raise StoreError(
                    f"{self.location} has no map for frame {i} ({self.ids[i]}): {missing} of {len(self)} frames "
                    "are not stored yet; finish the store with `tiekd cache-teacher`"
                )
        if self._reader is not None:
            try:
                return self._reader.scaled(i, 1 / DEPTH_SCALE, stored=True)
            except StoreError:
                self.require_unchanged()  # a removed or replaced group is that, not a damaged frame
                raise
        shard_file = f"{self.location}/depth/{self._depth.metadata.encode_chunk_key((i // self.frames_per_shard, 0, 0))}"
        try:
            values = self._depth[i]
        except Exception as e:  # zarr's codecs fail in many ways on damaged bytes
            self.require_unchanged()
            raise lost_connection(self.location, e) or damaged_frame(
                self.location, i, shard_file, f"{type(e).__name__}: {e}"
            ) from e
        if not values.all():  # quantise() never stores 0: the frame's bytes are gone
            raise damaged_frame(self.location, i, shard_file, "it is marked done but its map is missing")
        return dequantise(values)

    def to_dask(self):
        """All maps as a lazy dask array (N, H, W) float32 metres, one chunk per store shard.

        For statistics over a whole cache in parallel, e.g. ``c.to_dask().mean(axis=(1, 2)).compute()``.
        Frames not yet stored read as 0.
        """
        # Lazy: dask.array takes 0.7 s to import, and only this method of the store needs it.
        import dask.array as da

        stored = da.from_zarr(self._depth, chunks=(self.frames_per_shard, *self._depth.shape[1:]))
        return stored.astype(np.float32) / DEPTH_SCALE

    def require_stored(self, sample_ids: list[str], *, what: str) -> None:
        """Refuse, in one line with the count, a list of samples not all of whose maps are stored."""
        done = self.done
        missing = [s for s in sample_ids if s not in self.index or not done[self.index[s]]]
        if missing:
            raise StoreError(
                f"{self.location} has no map for {len(missing)} of the {len(sample_ids)} {what} "
                f"(first: {missing[0]}); run cache-teacher on this split first"
            )

    def depth_of(self, sample_id: str) -> np.ndarray:
        """Teacher depth by sample id (RGB relative path)."""
        try:
            return self.depth(self.index[sample_id])
        except KeyError:
            raise StoreError(f"{self.location} has no map for {sample_id}") from None


def generation(attrs: dict) -> str:
    """What tells a group from one made again in its place: its ``generation`` (a random id written
    at creation), or for groups from before that attribute its creation time."""
    return str(attrs.get("generation", attrs.get("created", "")))


def shard_frames(n_frames: int, shard: int, n_shards: int, *, frames_per_shard: int) -> list[int]:
    """Frame indices owned by process ``shard`` of ``n_shards``: whole store shards, round robin."""
    n_store_shards = -(-n_frames // frames_per_shard)
    frames = []
    for k in range(shard, n_store_shards, n_shards):
        frames.extend(range(k * frames_per_shard, min((k + 1) * frames_per_shard, n_frames)))
    return frames


def contiguous_runs(indices: list[int], *, frames_per_shard: int) -> list[tuple[int, int, int]]:
    """Split sorted indices into (start, stop, offset) runs that stay inside one store shard.

    ``offset`` is the position of ``start`` in ``indices``; one run is one shard write.
    """
    runs, begin = [], 0
    for pos in range(1, len(indices) + 1):
        at_end = pos == len(indices)
        if at_end or indices[pos] != indices[pos - 1] + 1 or indices[pos] % frames_per_shard == 0:
            runs.append((indices[begin], indices[pos - 1] + 1, begin))
            begin = pos
    return runs
