"""Versions of the teacher store's on-disk format and the depth codecs each one uses.

Every teacher/split group records the format it was written in (attribute ``tiekd_store_format``);
readers accept every version in ``READABLE_FORMATS``, writers create ``STORE_FORMAT`` and continue
an existing group in its own format (its arrays carry their codecs).

======  =======================================================  ==============================
format  inner chunk (one frame) codecs                            integrity of a frame
======  =======================================================  ==============================
1       numcodecs.delta <u2 -> bytes -> zstd                      none (CRC on the shard index only)
2       numcodecs.delta <u2 -> bytes -> zstd -> crc32c            CRC32C of the frame's bytes
3       tiekd.predict_2d -> bytes -> zstd -> crc32c               CRC32C of the frame's bytes
4       tiekd.predict_2d (offset 128) -> bytes -> numcodecs.shuffle
        (2-byte elements) -> zstd -> crc32c                       CRC32C of the frame's bytes
======  =======================================================  ==============================

In every format a shard file ends with its index of (offset, nbytes) pairs and a CRC32C over it
(Zarr v3 ``sharding_indexed``), so a frame is read only through a checked index.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.codecs.numcodecs import Delta, Shuffle
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.codec import Predict2D
from tiekd.pipeline.store.remote import lost_connection

STORE_FORMAT = 4
"""The format new groups are written in (see the table above)."""
READABLE_FORMATS = (1, 2, 3, 4)
"""Formats this tiekd reads and continues."""

# The Delta filter of formats 1 and 2 and the Shuffle of format 4 are numcodecs', not the Zarr v3 spec's: zarr-python
# and every numcodecs-aware reader decode them. Said once here instead of warning on every open.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3", category=UserWarning)
PLANE_PREDICTION = (Predict2D(),)
"""Format 3. Depth maps are locally close to planes: the residual of the plane prediction (left + up
- upper-left) is mostly 0 or tiny. Without a prediction no general compressor beats the authors'
PNGs; on network output this one is 0.39x their bytes, the row delta of formats 1 and 2 0.53x
(bench/bench_cache.py)."""
CHECKED_ZSTD = (ZstdCodec(level=9), Crc32cCodec())
"""zstd (level 9: its encoding is off the teacher's path, and higher levels take several times as
long for a few percent fewer bytes; README, Benchmarks), then a CRC32C of the compressed frame that zarr-python and
``FrameReader`` check on every read."""
DEPTH_FILTERS = (Predict2D(offset=128),)
"""Format 4: the plane residual + 128, so a residual in [-128, 127] has a zero high byte ..."""
DEPTH_COMPRESSORS = (Shuffle(elementsize=2), *CHECKED_ZSTD)
"""... and each frame's high bytes, grouped after its low bytes, are nearly all zeros: zstd packs
the frame into 0.80x the bytes of format 3 and decodes it in half the time."""

ROW_DELTA = (Delta(dtype="<u2"),)
"""Formats 1 and 2: numcodecs' delta over each flattened frame."""
FORMAT_CODECS = {
    1: (ROW_DELTA, (ZstdCodec(level=9),)),
    2: (ROW_DELTA, CHECKED_ZSTD),
    3: (PLANE_PREDICTION, CHECKED_ZSTD),
    4: (DEPTH_FILTERS, DEPTH_COMPRESSORS),
}
"""Store format -> (filters, compressors) of its depth array."""


def depth_codecs(version: int) -> tuple[tuple, tuple]:
    """(filters, compressors) of the depth array of a group written in format ``version``."""
    check_readable_format(version, location="this group")
    return FORMAT_CODECS[version]


def array_specs(n: int, crop: tuple[int, int], frames_per_shard: int, store_format: int) -> dict[str, dict]:
    """Name -> ``create_array`` arguments of the arrays of a cache group of ``n`` frames."""
    filters, compressors = depth_codecs(store_format)
    return {
        "depth": dict(
            shape=(n, *crop),
            dtype="uint16",
            fill_value=0,
            chunks=(1, *crop),
            shards=(frames_per_shard, *crop),
            filters=filters,
            compressors=compressors,
        ),
        "done": dict(shape=(n,), dtype="bool", fill_value=False, chunks=(frames_per_shard,)),
        "clipped": dict(shape=(n,), dtype="int32", fill_value=0, chunks=(frames_per_shard,)),
        "ids": dict(shape=(n,), dtype=str, chunks=(n,)),
    }


METADATA_KEYS = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "codecs", "fill_value")
"""What an array's zarr.json must say exactly as the group's format defines it: an edited codec
parameter (the predictor's offset, the byte order) would decode every frame wrongly without a
checksum failing."""


def expected_metadata(attrs: dict) -> dict[str, dict]:
    """Array name -> its METADATA_KEYS as the group's creation wrote them, from the group's record
    (``n_frames``, ``crop``, ``frames_per_shard``, ``tiekd_store_format``)."""
    specs = array_specs(int(attrs["n_frames"]), tuple(attrs["crop"]), int(attrs["frames_per_shard"]),
                        int(attrs["tiekd_store_format"]))  # fmt: skip
    return specified_metadata(specs)


def specified_metadata(specs: dict[str, dict]) -> dict[str, dict]:
    """Array name -> the METADATA_KEYS of the array ``create_array(**spec)`` makes (in memory)."""
    template = zarr.open_group(MemoryStore(), mode="w", zarr_format=3)
    return {name: _comparable(template.create_array(name, **spec)) for name, spec in specs.items()}


def _comparable(array: zarr.Array) -> dict:
    """The METADATA_KEYS of an array's metadata, as JSON text (so codec objects compare by value)."""
    document = array.metadata.to_dict()
    return {key: json.dumps(document.get(key), sort_keys=True, default=str) for key in METADATA_KEYS}


def unsound_metadata(group: zarr.Group, expected: dict[str, dict]) -> dict[str, str]:
    """Array name -> what is wrong, for each array of the group whose metadata is missing,
    unreadable, or not what ``expected`` (:func:`expected_metadata`) says."""
    unsound = {}
    for name, want in expected.items():
        try:
            array = group[name]
        except (KeyError, ValueError, TypeError):
            unsound[name] = "missing or corrupt"
            continue
        if not isinstance(array, zarr.Array):
            unsound[name] = "not an array"
            continue
        have = _comparable(array)
        wrong = [key for key in METADATA_KEYS if have[key] != want[key]]
        if wrong:
            unsound[name] = f"edited: its {', '.join(wrong)} differ from what the group's store format defines"
    return unsound


GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")
"""Teacher and split group names: one path component of safe characters, never '.', '..' or
zarr's reserved '__' prefix, so a name can never reach outside its store."""
GROUP_NAME_CHARS = 100
"""Longest group name: far below any filesystem's component limit (255 bytes)."""


def split_group_name(split_file: str | Path) -> str:
    """The default name of a split's group: the split file's stem, each run of characters a group
    name cannot hold replaced by "_" (``_my split.txt`` -> ``my_split``), so a file name never
    makes an option nobody gave fail."""
    stem = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", Path(split_file).stem).replace("..", "_").lstrip("_.+=-")
    return stem[:GROUP_NAME_CHARS] or "split"


def check_group_name(name: str | None, *, flag: str) -> None:
    """Refuse a teacher or split group name that is not one plain path component."""
    if name is None:
        return
    if not GROUP_NAME.fullmatch(name) or len(name) > GROUP_NAME_CHARS or ".." in name:
        raise StoreError(
            f"{flag} {name!r} is not a valid store group name; use letters, digits and _ . + = - "
            f"(at most {GROUP_NAME_CHARS}, starting with a letter or digit, no '..')"
        )


def check_readable_format(version, *, location: str) -> None:
    """Refuse a group written in a format this tiekd cannot read."""
    if version not in READABLE_FORMATS:
        raise StoreError(
            f"{location} has store format {version!r}, this tiekd reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}; upgrade tiekd or re-create it with `tiekd cache-teacher --overwrite`"
        )


def store_of(location: str) -> str:
    """``STORE/teacher/split`` -> ``STORE``."""
    return location.rsplit("/", 2)[0]


INPUTS_GROUP = "_inputs"
"""The root's group of packed splits (pipeline/store/inputs.py; a name no teacher group can have)."""


def damaged_frame(location: str, frame: int, shard_file: str, why) -> StoreError:
    """The one line for a frame whose stored bytes cannot be trusted (of a teacher group or a packed split)."""
    again = (
        "`tiekd cache pack` again to pack it"
        if f"/{INPUTS_GROUP}/" in location
        else "`tiekd cache-teacher` again to recompute it"
    )
    return StoreError(
        f"frame {frame} of {location} is damaged ({why}; shard file {shard_file}); run "
        f"`tiekd cache verify --repair {store_of(location)}` and then {again}"
    )


def open_member(group: zarr.Group, name: str, *, location: str) -> zarr.Array:
    """Array ``name`` of a cache group, or a one-line ``StoreError`` where its metadata is lost."""
    try:
        array = group[name]
    except (KeyError, ValueError, TypeError) as e:  # missing, not JSON, or not array metadata
        raise lost_metadata(location, name) from e
    if not isinstance(array, zarr.Array):
        raise lost_metadata(location, name)
    return array


def read_whole(group: zarr.Group, name: str, *, location: str):
    """All of array ``name`` of a group (ids, done, ...): a one-line ``StoreError`` where its metadata is
    lost, its bytes are damaged (zarr's codecs fail in many ways) or the connection to the store is lost."""
    array = open_member(group, name, location=location)
    try:
        return array[:]
    except Exception as e:
        raise lost_connection(location, e) or StoreError(
            f"{location}/{name} is damaged ({type(e).__name__}: {e}); restore it from a backup, or remove the "
            "group with `tiekd cache rm` and make it again"
        ) from e


def unsound_array(location: str, name: str, why: str) -> StoreError:
    """The one line for an array whose metadata cannot be trusted (``why``: from :func:`unsound_metadata`)."""
    return StoreError(
        f"{location}/{name}/zarr.json is {why}; run `tiekd cache verify --repair {store_of(location)}` "
        "to rebuild it from the group's record"
    )


RECORD_KEYS = ("created", "n_frames", "crop", "frames_per_shard", "tiekd_store_format")
"""The attributes a group's arrays can be checked against and rebuilt from."""


MAX_FRAMES = 100_000_000
"""Most frames a group may record (KITTI's training split has 23,158): a record claiming more is damaged."""
MAX_MAP_PIXELS = 1 << 26
"""Most pixels of a stored map (64 M; the KB crop has 0.43 M): a record claiming more is damaged."""


def check_record(attrs: dict, *, location: str) -> None:
    """Refuse, in one line, a group record whose sizes no tiekd wrote (an edited or damaged
    ``zarr.json``): rebuilding or reading arrays of such sizes would ask for terabytes."""
    frames, crop, per_shard = attrs.get("n_frames"), attrs.get("crop"), attrs.get("frames_per_shard")
    sizes = [frames, per_shard, *(crop if isinstance(crop, list) and len(crop) == 2 else [None, None])]
    if all(isinstance(n, int) and n > 0 for n in sizes):
        if frames <= MAX_FRAMES and per_shard <= MAX_FRAMES and crop[0] * crop[1] <= MAX_MAP_PIXELS:
            return
    raise StoreError(
        f"{location}/zarr.json is damaged: its record claims {frames} frames of {crop} pixels, sizes tiekd never "
        f"writes (at most {MAX_FRAMES} frames of {MAX_MAP_PIXELS} pixels); restore it from a backup, or remove the "
        "group with `tiekd cache rm` and cache that teacher again"
    )


def check_metadata(group: zarr.Group, *, location: str) -> None:
    """Refuse, in one line, a group one of whose arrays is not as its format defines it."""
    attrs = dict(group.attrs)
    if not set(RECORD_KEYS) <= attrs.keys() or attrs["tiekd_store_format"] not in READABLE_FORMATS:
        return  # a group still being created, or one the caller refuses for its format
    check_record(attrs, location=location)
    for name, why in unsound_metadata(group, expected_metadata(attrs)).items():
        raise unsound_array(location, name, why)


def lost_metadata(location: str, name: str) -> StoreError:
    """The one line for an array whose zarr.json is lost: a teacher group's is rebuilt by ``verify --repair``,
    a packed split's by packing it again."""
    if f"/{INPUTS_GROUP}/" in location:
        return StoreError(f"{location}/{name}/zarr.json is missing or corrupt; pack the split again with "
                          "`tiekd cache pack --overwrite`")  # fmt: skip
    return StoreError(
        f"{location}/{name}/zarr.json is missing or corrupt; run `tiekd cache verify --repair {store_of(location)}` "
        "to rebuild it from the group's attributes"
    )


async def _names(store, prefix: str) -> set[str]:
    """Names below ``prefix`` (fsspec's HTTP listing ends folder names with '/')."""
    return {name.rstrip("/") async for name in store.list_dir(prefix)} - {"", "zarr.json"}


def listed_names(group: zarr.Group, *, location: str) -> set[str]:
    """The names in a group's folder. A web server that does not list folders (nginx's default)
    is one line: readers that are told the teacher and split never list."""
    try:
        return sync(_names(group.store, group.path))
    except Exception as e:
        if isinstance(group.store, LocalStore):
            raise
        status = getattr(e, "status", None)
        reason = f"HTTP {status}" if status else f"{type(e).__name__}: {e}"
        raise StoreError(
            f"{location}: the server does not list its folders ({reason}); give --teacher and --split-name "
            "(every command reads then without listing), or serve the store with listings (nginx: autoindex on)"
        ) from e


def child_groups(group: zarr.Group, *, location: str) -> dict[str, zarr.Group]:
    """Name -> sub-group of a store's group, in name order. A member whose ``zarr.json`` cannot
    be read is a one-line ``StoreError`` naming it (zarr's own listing ends in a traceback). Names no
    teacher or split group can have (the packed inputs' ``_inputs``, pipeline/store/inputs.py) are
    not listed."""
    children = {}
    for name in sorted(listed_names(group, location=location)):
        if not GROUP_NAME.fullmatch(name):
            continue
        try:
            member = group[name]
        except KeyError:
            continue  # a folder without zarr metadata is no member
        except (ValueError, TypeError) as e:
            raise StoreError(
                f"{location}/{name}/zarr.json is corrupt ({e}); restore it from a backup, or delete the "
                f"folder {location}/{name} and cache that teacher again"
            ) from e
        if isinstance(member, zarr.Group):
            children[name] = member
    return children
