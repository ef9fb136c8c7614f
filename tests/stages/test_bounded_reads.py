"""Every read path refuses a crafted zstd or blosc frame (valid, CRC32C-checked) that claims 1 GiB in one line,
without inflating it: reads through zarr-python (a remote store without the shard cache, a shard still
being written, a ``file://`` URL, packed inputs over HTTP, a text array) as well as tiekd's own reader.
The peak of memory Python and NumPy allocate during ``tiekd cache verify`` (tracemalloc: zstd's output
buffers are Python bytes or NumPy arrays) stays far below the gibibyte; test_http_store.py measures a
real process's resident size."""

import shutil
import tracemalloc

import pytest
import zarr
from support.commands import TEACHER, error_line
from support.http_server import serving
from support.store_damage import bomb, decompression_bomb

from tiekd.stages.cache_teacher import CacheTeacherConfig
from tiekd.stages.cache_teacher import run as cache_run
from tiekd.stages.pack_inputs import PackConfig
from tiekd.stages.pack_inputs import run as pack

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GROUP = "s.zarr/row_prior/test"
PACKED = "s.zarr/_inputs/test"
BOUNDED = 256 << 20
"""Far above what verifying the 4-frame store allocates, far below the gibibyte a bomb inflates to."""


@pytest.fixture(scope="module")
def folder(sample, tmp_path_factory):
    """A folder holding a store of the toy teacher's maps of the sample's test split, and the split packed."""
    folder = tmp_path_factory.mktemp("bounded")
    out = str(folder / "s.zarr")
    cache_run(CacheTeacherConfig(teacher=TEACHER, data_root=sample.data_root, split=sample.test_split, out=out,
                                 teacher_input=(88, 304), workers=0))  # fmt: skip
    pack(PackConfig(data_root=sample.data_root, gt_root=sample.gt_root, split=sample.test_split, out=out))
    return folder


def unsettled(folder) -> None:
    """Mark the group's last frame not done: its shard is one still being written (read through zarr)."""
    zarr.open_group(folder / GROUP, mode="r+")["done"][-1] = False


def ids_bomb(folder) -> None:
    """The group's ids (a text array, no fixed size) replaced by a frame that claims 1 GiB."""
    (folder / GROUP / "ids/c/0").write_bytes(bomb())


CASES = {
    "http, no shard cache": (f"{GROUP}/depth/c/0/0/0", None, "http", "0", "frame 0 of"),
    "http, shard being written": (f"{GROUP}/depth/c/0/0/0", unsettled, "http", "20", "frame 0 of"),
    "file:// URL": (f"{GROUP}/depth/c/0/0/0", None, "file", "20", "frame 0 of"),
    "packed image over http": (f"{PACKED}/image/c/0/0/0/0", None, "http", "20", "frame 0 of"),
    "packed image over http, no shard cache": (f"{PACKED}/image/c/0/0/0/0", None, "http", "0", "frame 0 of"),
    "packed gt, local": (f"{PACKED}/gt/c/0/0/0", None, "local", "20", "frame 0 of"),
    "ids text array": (None, ids_bomb, "local", "20", "ids"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_frame_that_claims_a_gibibyte_is_refused_on_every_read_path(case, folder, tmp_path, cli, monkeypatch):
    shard, damage, where, cache_gb, named = CASES[case]
    bombed = tmp_path / "served"
    shutil.copytree(folder, bombed)
    if shard:
        decompression_bomb(bombed / shard, frames_per_shard=32, codec="blosc" if "image" in case else "zstd")
    if damage:
        damage(bombed)
    monkeypatch.setenv("TIEKD_SHARD_CACHE", str(tmp_path / "shards"))
    monkeypatch.setenv("TIEKD_SHARD_CACHE_GB", cache_gb)
    with serving(bombed) as base:
        store = {"http": f"{base}/s.zarr", "file": f"file://{bombed}/s.zarr", "local": bombed / "s.zarr"}[where]
        tracemalloc.start()
        try:
            result = cli("cache", "verify", store)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    error_line(result)  # exit 1, one Error: line, no traceback
    assert named in result.output and "does not decode" in result.output, result.output
    again = "`tiekd cache pack` again to pack it" if "packed" in case else "`tiekd cache-teacher` again"
    assert case == "ids text array" or again in result.output, result.output
    assert peak < BOUNDED, f"{case}: {peak / 2**20:.0f} MiB allocated"
