"""Packed inputs: a split's images and ground truth stored beside the teacher groups of a store.

A node that holds a packed store trains, evaluates and explains without the dataset's files
(``tiekd cache pack``, ``cache-teacher --with-inputs``). Layout, next to the teacher groups::

    STORE/_inputs/<split>/     group; attrs: INPUTS_FORMAT, dataset, split_sha256, n_frames, crop (H, W),
                               gt_scale, frames_per_shard, created, generation, completed
      image      (N, H, W, 3) uint8: the image as training and evaluation read it (the dataset's cache
                 crop: KITTI the 352x1216 KB crop, NYU the 480x640 image)
      gt         (N, H, W) uint16: ground truth at the same crop, value = depth_m * gt_scale exactly
                 (KITTI 256, NYU 1000: the source PNG's own values), 0 = no measurement
      full_size  (N, 2) int32: (H, W) of the uncropped image (the BTS crop mask on the full image)
      box        (N, 2) int32: (top, left) of the crop in it
      image_sha256, gt_sha256  (N,) str: SHA-256 of the source files' bytes (a frame of NYU's labeled
                 .mat: of the decoded frame), "" where a record has no GT
      done       (N,) bool: set last, after every array of the frame is written (the resume marker)
      ids, gt_ids (N,) str: the records' RGB and GT paths, in split order ("" = no GT)

``_inputs`` cannot be a teacher's name (names start with a letter or digit), so listings of
teachers never see it. image and gt are sharded like the teacher maps (Zarr v3
``sharding_indexed``, one frame per inner chunk, FRAMES_PER_SHARD frames per shard file, the
index CRC32C-checked), each frame compressed on its own and followed by its CRC32C, which every read
checks: the image ``bytes -> blosc (lz4hc) -> crc32c``, the GT ``bytes -> zstd -> crc32c``. The image
codec was chosen by measurement (bench/bench_codec.py, README): blosc's LZ4HC decodes a KB crop about
3x as fast as zstd (and 15x as fast as PIL decodes the PNG) for about 1.2x zstd's bytes, and the image
decode is the one cost only the packed path pays. The GT, mostly zeros, is smallest with zstd and
read only by supervised terms. Per-frame arrays are chunked on shard boundaries, so ``--shard I/N``
processes never write the same file.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

import tiekd
from tiekd.pipeline.errors import StoreError, StoreUnreachable
from tiekd.pipeline.store.cache import FRAMES_PER_SHARD, contiguous_runs, generation, open_root, plain_path, utc_now
from tiekd.pipeline.store.codec import blosc_decoded
from tiekd.pipeline.store.formats import (
    GROUP_NAME,
    INPUTS_GROUP,
    STORE_FORMAT,
    check_group_name,
    damaged_frame,
    listed_names,
    open_member,
    read_whole,
    specified_metadata,
    unsound_metadata,
)
from tiekd.pipeline.store.lease import creation_lock, hold_group
from tiekd.pipeline.store.reader import FrameReader
from tiekd.pipeline.store.remote import lost_connection
from tiekd.pipeline.store.shard_cache import CachedFrameReader, cached_reader
from tiekd.pipeline.store.writer import check_writable, remove_group

INPUTS_FORMAT = 2
"""Version of the layout above, attribute ``tiekd_inputs_format`` of each packed split (1: the image
with zstd)."""
IMAGE_CODECS = (BloscCodec(cname="lz4hc", clevel=9, shuffle="noshuffle", typesize=1, blocksize=0), Crc32cCodec())
"""Per image frame: blosc's LZ4HC at its highest level (packing is done once; decoding is as fast at
any level), then a CRC32C of the compressed frame that every read checks."""
GT_CODECS = (ZstdCodec(level=9), Crc32cCodec())
"""Per GT frame: zstd (level 9), then the CRC32C."""
PER_FRAME = ("image", "gt", "full_size", "box", "image_sha256", "gt_sha256")
"""Arrays written frame by frame, before ``done``."""


def array_specs(n: int, crop: tuple[int, int], frames_per_shard: int) -> dict[str, dict]:
    """Name -> ``create_array`` arguments of a packed split of ``n`` frames at ``crop`` (H, W)."""
    frames = dict(chunks=(frames_per_shard,))
    return {
        "image": dict(shape=(n, *crop, 3), dtype="uint8", fill_value=0, chunks=(1, *crop, 3),
                      shards=(frames_per_shard, *crop, 3), compressors=IMAGE_CODECS),
        "gt": dict(shape=(n, *crop), dtype="uint16", fill_value=0, chunks=(1, *crop),
                   shards=(frames_per_shard, *crop), compressors=GT_CODECS),
        "full_size": dict(shape=(n, 2), dtype="int32", fill_value=0, chunks=(frames_per_shard, 2)),
        "box": dict(shape=(n, 2), dtype="int32", fill_value=0, chunks=(frames_per_shard, 2)),
        "image_sha256": dict(shape=(n,), dtype=str, **frames),
        "gt_sha256": dict(shape=(n,), dtype=str, **frames),
        "done": dict(shape=(n,), dtype="bool", fill_value=False, **frames),
        "ids": dict(shape=(n,), dtype=str, chunks=(n,)),
        "gt_ids": dict(shape=(n,), dtype=str, chunks=(n,)),
    }  # fmt: skip


def _check_metadata(group: zarr.Group, attrs: dict, *, location: str) -> None:
    """Refuse, in one line, a packed split whose arrays are not as its record defines them: an edited byte order
    or data type would read every frame wrongly without a checksum failing."""
    try:
        specs = array_specs(int(attrs["n_frames"]), tuple(attrs["crop"]), int(attrs["frames_per_shard"]))
        expected = specified_metadata(specs)
    except (KeyError, TypeError, ValueError):
        raise StoreError(f"{location}/zarr.json is damaged: its record lacks or garbles n_frames, crop or "
                         "frames_per_shard; pack the split again with `tiekd cache pack --overwrite`") from None
    for name, why in unsound_metadata(group, expected).items():
        raise StoreError(f"{location}/{name}/zarr.json is {why}; pack the split again with "
                         "`tiekd cache pack --overwrite`")  # fmt: skip


@dataclass(frozen=True)
class PackedFrame:
    """One record's inputs as packed: what training and evaluation read of it."""

    image: np.ndarray
    """uint8 (H, W, 3) at the cache crop."""
    gt: np.ndarray
    """uint16 (H, W) GT values at the cache crop (depth x gt_scale), 0 = none."""
    full_size: tuple[int, int]
    box: tuple[int, int]
    image_sha256: str
    gt_sha256: str


def inputs_location(path: str, split: str) -> str:
    return f"{path}/{INPUTS_GROUP}/{split}"


class PlainFrameReader(FrameReader):
    """Direct reads of a local packed array (``bytes -> zstd or blosc -> crc32c`` frames of any dtype)."""

    def __init__(self, array: zarr.Array, **kwargs):
        super().__init__(array, **kwargs)
        self._blosc = isinstance(array.metadata.codecs[0].codecs[1], BloscCodec)

    @staticmethod
    def reads(array: zarr.Array) -> bool:
        sharding = array.metadata.codecs[0] if len(array.metadata.codecs) == 1 else None
        return (
            isinstance(sharding, ShardingCodec)
            and tuple(sharding.chunk_shape) == (1, *array.shape[1:])
            and len(sharding.codecs) == 3
            and isinstance(sharding.codecs[0], BytesCodec)
            and array.dtype.itemsize in (1, 2)
            and (array.dtype.itemsize == 1 or sharding.codecs[0].endian.value == "little")
            and isinstance(sharding.codecs[1], (ZstdCodec, BloscCodec))
            and isinstance(sharding.codecs[2], Crc32cCodec)
        )

    def frame(self, i: int, dtype: np.dtype) -> np.ndarray:
        """Frame ``i`` (marked done) as stored, of the array's ``dtype``."""
        i %= self.frames
        out = np.empty(self.shape, dtype)
        encoded = self._encoded(i)
        if encoded is None:
            raise self._damaged(i, "it is marked done but its bytes are missing")
        try:
            payload, out_bytes = self._checked(i, encoded), out.reshape(-1).view(np.uint8)
            blosc_decoded(payload, out_bytes) if self._blosc else self._zstd.decode(payload, out=out_bytes)
        except (RuntimeError, ValueError) as e:
            raise self._damaged(i, f"it does not decode: {e}") from e
        return out


class CachedPlainFrameReader(CachedFrameReader, PlainFrameReader):
    """Frames of a remote packed array read from local copies of its settled shards (the shard
    cache, pipeline/store/shard_cache.py), checked and decoded as :class:`PlainFrameReader` does."""

    def frame(self, i: int, dtype: np.dtype) -> np.ndarray:
        return self._from_copy(i, lambda: PlainFrameReader.frame(self, i, dtype))


class PackedInputs:
    """Read-only view of one packed split (see the module docstring)."""

    def __init__(self, group: zarr.Group, *, location: str):
        self._group, self.location = group, location
        self.attrs = dict(group.attrs)
        if self.attrs.get("tiekd_inputs_format") != INPUTS_FORMAT:
            raise StoreError(f"{location} has packed-inputs format {self.attrs.get('tiekd_inputs_format')!r}, "
                             f"this tiekd reads {INPUTS_FORMAT}; pack the split again with `tiekd cache pack`")  # fmt: skip
        _check_metadata(group, self.attrs, location=location)
        member = {name: open_member(group, name, location=location) for name in (*PER_FRAME, "done", "ids", "gt_ids")}
        self._image, self._gt = member["image"], member["gt"]
        self.ids = [str(s) for s in read_whole(group, "ids", location=location)]
        self.gt_ids = [str(s) for s in read_whole(group, "gt_ids", location=location)]
        self.index = {sample_id: i for i, sample_id in enumerate(self.ids)}
        self.done = read_whole(group, "done", location=location)
        self.full_size, self.box = (read_whole(group, name, location=location) for name in ("full_size", "box"))
        self.gt_scale = float(self.attrs["gt_scale"])
        self.generation = generation(self.attrs)
        self._readers = {name: self._reader(member[name]) for name in ("image", "gt")}

    def _reader(self, array: zarr.Array) -> PlainFrameReader | None:
        """Direct reads of a local store, or of a remote one's local shard copies; None = through zarr-python."""
        return PlainFrameReader.for_array(array, done=self.done, location=self.location) or cached_reader(
            array, done=self.done, location=self.location, generation=self.generation, kind=CachedPlainFrameReader
        )

    @classmethod
    def open(cls, path: str, split: str) -> PackedInputs:
        """The packed split ``split`` of the store at ``path`` (a StoreError where there is none)."""
        root = open_root(str(path), mode="r")
        location = inputs_location(str(path), split)
        try:
            group = root[f"{INPUTS_GROUP}/{split}"]
        except KeyError:
            raise StoreError(f"{path} holds no packed inputs of split {split!r}; pack them with `tiekd cache pack "
                             f"--out {path}` or pass --data-root and --gt-root") from None  # fmt: skip
        except (ValueError, TypeError) as e:  # a zarr.json that is not JSON, or not group metadata
            raise _corrupt(location, e) from None
        return cls(group, location=location)

    @staticmethod
    def holds(path: str, split: str) -> bool:
        """Whether the store at ``path`` holds a packed split named ``split``."""
        try:
            return f"{INPUTS_GROUP}/{split}" in open_root(str(path), mode="r")
        except StoreError:
            return False

    def __len__(self) -> int:
        return len(self.ids)

    def require_unchanged(self) -> None:
        """Refuse, in one line, a packed split removed or packed again in its place (``cache pack --overwrite``)
        since it was opened: its frames are gone or others."""
        try:
            fresh = zarr.open_group(store=self._group.store, path=self._group.path, mode="r", zarr_format=3)
            now = generation(dict(fresh.attrs))
        except (FileNotFoundError, KeyError, ValueError, OSError, zarr.errors.GroupNotFoundError):
            raise StoreError(f"{self.location} was removed while in use (deleted, or cache pack --overwrite); "
                             "pack it again, then start the run again") from None
        if now != self.generation:
            raise StoreError(f"{self.location} was packed again while in use (cache pack --overwrite): its frames "
                             "are not the ones this run started with; keep a packed split unchanged while runs read it")

    def _frame(self, name: str, i: int) -> np.ndarray:
        if not self.done[i]:
            raise StoreError(f"{self.location} has not packed frame {i} ({self.ids[i]}) yet; finish it with "
                             "`tiekd cache pack`")  # fmt: skip
        reader = self._readers[name]
        array = self._image if name == "image" else self._gt
        if name == "gt" and not (self.attrs.get("with_gt") and self.gt_ids[i]):
            return np.zeros(array.shape[1:], array.dtype)  # packed without GT: older packs stored no bytes
        try:
            if reader is not None and (not isinstance(reader, CachedFrameReader) or reader.settled(i)):
                return reader.frame(i, array.dtype)
            return array[i]
        except StoreUnreachable:
            raise
        except Exception as e:  # a lost connection, or zarr's codecs failing in many ways on damaged bytes
            lost = None if isinstance(e, StoreError) else lost_connection(self.location, e)
            if lost is not None:
                raise lost from e
            self.require_unchanged()  # a removed or replaced split is that, not a damaged frame
            if isinstance(e, StoreError):
                raise
            raise damaged_frame(self.location, i, f"{self.location}/{name}", f"{type(e).__name__}: {e}") from e

    def image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) image of frame ``i`` at the cache crop."""
        return self._frame("image", i)

    def gt(self, i: int) -> np.ndarray:
        """float32 (H, W) GT metres of frame ``i`` at the cache crop (0 = none), as the source file reads."""
        return self._frame("gt", i).astype(np.float32) / np.float32(self.gt_scale)

    def damaged(self) -> dict[int, str]:
        """Frame -> one line, for each packed frame whose image or GT does not read back (CRC32C, missing bytes)."""
        problems = {}
        for i in np.flatnonzero(self.done).tolist():
            try:
                self.image(i), self.gt(i)
            except StoreError as e:
                problems[i] = e.message
        return problems

    def unmark(self, frames: list[int]) -> None:
        """Mark ``frames`` not packed (``cache verify --repair``), so ``cache pack`` packs them again."""
        store, _, split = self.location.rsplit("/", 2)
        done = open_root(store, mode="r+")[f"{INPUTS_GROUP}/{split}/done"]
        for i in frames:
            done[i] = False

    def require_packed(self, sample_ids: list[str], *, what: str) -> None:
        """Refuse, in one line, samples not all of which are packed."""
        missing = [s for s in sample_ids if s not in self.index or not self.done[self.index[s]]]
        if missing:
            raise StoreError(f"{self.location} has not packed {len(missing)} of the {len(sample_ids)} {what} "
                             f"(first: {missing[0]}); run `tiekd cache pack` on this split first")  # fmt: skip


class InputsWriter:
    """One packed split opened for writing (created or resumed)."""

    def __init__(self, group: zarr.Group, *, location: str):
        self._group, self.location = group, location
        self._lease = hold_group(location)  # shared while packing: never removed or replaced under it
        self._arrays = {name: open_member(group, name, location=location) for name in (*PER_FRAME, "done")}
        for name in ("image", "gt"):  # an all-zero frame (black, or GT without a measurement) is stored too
            self._arrays[name] = self._arrays[name].with_config({"write_empty_chunks": True})
        self.frames_per_shard = int(self._arrays["image"].shards[0])

    @classmethod
    def create_or_resume(
        cls,
        path: str,
        *,
        split: str,
        ids: list[str],
        gt_ids: list[str],
        attrs: dict,
        overwrite: bool = False,
        frames_per_shard: int = FRAMES_PER_SHARD,
    ) -> InputsWriter:
        """Open ``path/_inputs/split``, creating it if needed. ``attrs`` (dataset, split_sha256, crop,
        gt_scale) must match an existing group's, unless ``overwrite``, which replaces it."""
        path = plain_path(path)
        check_group_name(split, flag="--split-name")
        check_writable(path)
        with creation_lock(path):
            root = open_root(path, mode="a", attributes={"tiekd_store_format": STORE_FORMAT})
            parent = root.require_group(INPUTS_GROUP)
            location = inputs_location(path, split)
            if split in parent and overwrite:
                remove_group(parent, split, location=location)
            group = parent.require_group(split)
            if "created" in group.attrs:
                _check_same(dict(group.attrs), attrs, location=location)
                return cls(group, location=location)
            fps = frames_per_shard
            for name, spec in array_specs(len(ids), tuple(attrs["crop"]), fps).items():
                group.create_array(name, overwrite=True, **spec)
            group["ids"][:] = np.array(ids, dtype=object)
            group["gt_ids"][:] = np.array(gt_ids, dtype=object)
            group.attrs.update(attrs | {"tiekd_inputs_format": INPUTS_FORMAT, "tiekd_version": tiekd.__version__,
                                        "n_frames": len(ids), "frames_per_shard": fps, "created": utc_now(),
                                        "generation": uuid.uuid4().hex})  # fmt: skip
            return cls(group, location=location)

    def pending(self, frames: list[int]) -> list[int]:
        done = self._arrays["done"][:]
        return [i for i in frames if not done[i]]

    def write(self, indices: list[int], frames: list[PackedFrame]) -> None:
        """Store ``frames`` at ``indices`` (sorted), every array first and ``done`` last."""
        for start, stop, offset in contiguous_runs(indices, frames_per_shard=self.frames_per_shard):
            run = frames[offset : offset + stop - start]
            for name in PER_FRAME:
                values = [getattr(frame, name) for frame in run]
                self._arrays[name][start:stop] = np.array(values, dtype=object if "sha" in name else None)
            self._arrays["done"][start:stop] = True

    def finish(self) -> bool:
        """Record completion once every frame is packed; True if complete."""
        if not self._arrays["done"][:].all():
            return False
        self._group.attrs["completed"] = utc_now()
        return True


IDENTITY_KEYS = ("dataset", "split_sha256", "crop", "gt_scale")
"""Attributes two packings of one split must share to be continued as one."""


def _check_same(theirs: dict, ours: dict, *, location: str) -> None:
    differences = [f"{k}: {theirs.get(k)!r} in the store vs {ours.get(k)!r} now" for k in IDENTITY_KEYS
                   if _plain(theirs.get(k)) != _plain(ours.get(k))]  # fmt: skip
    if differences:
        raise StoreError(f"{location} was packed differently ({'; '.join(differences)}); pass --overwrite to "
                         "replace it, or another --split-name")  # fmt: skip


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def packed_splits(path: str) -> dict[str, PackedInputs]:
    """Name -> every packed split of the store at ``path``, in name order."""
    root = open_root(str(path), mode="r")
    try:
        if INPUTS_GROUP not in root:
            return {}
        parent = root[INPUTS_GROUP]
    except (ValueError, TypeError) as e:  # a zarr.json that is not JSON, or not group metadata
        raise _corrupt(f"{path}/{INPUTS_GROUP}", e) from None
    names = sorted(name for name in listed_names(parent, location=f"{path}/{INPUTS_GROUP}") if GROUP_NAME.fullmatch(name))
    return {name: PackedInputs.open(str(path), name) for name in names}


def _corrupt(location: str, e: Exception) -> StoreError:
    return StoreError(f"{location}/zarr.json is corrupt ({type(e).__name__}: {e}); restore it from a backup, or "
                      f"delete the folder {location} and pack what it held again with `tiekd cache pack`")  # fmt: skip
