"""`tiekd cache info` and `tiekd cache verify` on real stores, sound and damaged."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from support.commands import cache_args
from support.runs import assert_same_store
from support.store_damage import flip_bit

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import CacheSpec, TeacherCache
from tiekd.pipeline.store.formats import STORE_FORMAT
from tiekd.pipeline.store.writer import CacheWriter

SPEC = CacheSpec(
    teacher_spec="python:toy:make",
    teacher_sha256=None,
    split_sha256="cd" * 32,
    crop=(16, 24),
    teacher_input=None,
    flip_tta=True,
    min_depth=1e-3,
    max_depth=80.0,
)


def store(path, n_done: int):
    writer = CacheWriter.create_or_resume(
        str(path),
        teacher="toy",
        split="test",
        spec=SPEC,
        ids=[f"f{i}.png" for i in range(6)],
        extra_attrs={},
        frames_per_shard=2,
    )
    writer.write(list(range(n_done)), np.full((n_done, 16, 24), 7.0, np.float32), np.zeros(n_done, np.int32))
    writer.finish()
    return path


def test_info_json_and_table(tmp_path, cli):
    path = store(tmp_path / "s.zarr", 4)
    summary = json.loads(cli("cache", "info", path, "--json").output)
    [entry] = summary["caches"]
    assert (entry["teacher"], entry["split"], entry["frames"], entry["done"], entry["complete"]) == (
        "toy",
        "test",
        6,
        4,
        False,
    )
    assert entry["bytes"] > 0 and entry["bytes_per_frame"] == round(entry["bytes"] / 4)
    assert entry["store_format"] == STORE_FORMAT and entry["created"] and entry["completed"] is None
    table = cli("cache", "info", path).output
    assert "toy/test: 4/6 frames (incomplete)" in table and "teacher python:toy:make" in table
    assert "completed -" in table


def test_info_lists_every_group_with_who_made_it(tmp_path, cli):
    path = store(tmp_path / "s.zarr", 6)
    writer = CacheWriter.create_or_resume(
        str(path), teacher="other", split="val", spec=dataclasses.replace(SPEC, teacher_sha256="ab" * 32),
        ids=["a.png"], extra_attrs={}, store_format=2,
    )
    writer.write([0], np.ones((1, 16, 24), np.float32), np.zeros(1, np.int32))
    writer.finish()
    entries = {(e["teacher"], e["split"]): e for e in json.loads(cli("cache", "info", path, "--json").output)["caches"]}
    assert sorted(entries) == [("other", "val"), ("toy", "test")]
    assert entries["other", "val"]["teacher_sha256"] == "ab" * 32 and entries["other", "val"]["store_format"] == 2
    assert entries["toy", "test"]["complete"] and entries["toy", "test"]["completed"] >= entries["toy", "test"]["created"]
    table = cli("cache", "info", path).output
    assert "other/val: 1/1 frames (complete)" in table and "(weights sha256 abababababab)" in table


def test_verify_sound_store(tmp_path, cli):
    result = cli("cache", "verify", store(tmp_path / "s.zarr", 6))
    assert result.exit_code == 0 and "6 stored frames read, no problems" in result.output


def test_verify_finds_a_frame_marked_done_without_data(tmp_path, cli):
    path = store(tmp_path / "s.zarr", 6)
    shard = next(p for p in (path / "toy/test/depth").rglob("*") if p.is_file() and p.name != "zarr.json")
    shard.unlink()  # a lost shard file: its frames are marked done but read as 0
    result = cli("cache", "verify", path)
    assert result.exit_code == 1 and "is damaged (it is marked done but its bytes are missing" in result.output
    assert "Traceback" not in result.output


def test_verify_reports_a_corrupt_shard_in_one_line(tmp_path, cli):
    path = store(tmp_path / "s.zarr", 6)
    shard = next(p for p in (path / "toy/test/depth").rglob("*") if p.is_file() and p.name != "zarr.json")
    shard.write_bytes(b"\x00" * 40)
    result = cli("cache", "verify", path)
    assert result.exit_code == 1 and "index fails its CRC32C check" in result.output
    assert "Traceback" not in result.output and "run `tiekd cache verify --repair" in result.output


def test_info_on_a_missing_store(tmp_path, cli):
    result = cli("cache", "info", tmp_path / "none.zarr")
    assert result.exit_code == 1 and "no teacher cache at" in result.output


class TestRepair:
    """Issue 9 cases 8, 9 and 15 with the real stage: damage, repair, re-run, compare."""

    @pytest.fixture
    def stores(self, sample, tmp_path, cli):
        """(damaged copy, untouched original) of the toy teacher's maps of the test split (2 shards)."""
        assert cli(*cache_args(sample, tmp_path / "whole.zarr", sample.test_split)).exit_code == 0
        return shutil.copytree(tmp_path / "whole.zarr", tmp_path / "s.zarr"), tmp_path / "whole.zarr"

    def test_truncated_shard_and_flipped_bit_are_recomputed_exactly(self, sample, stores, cli):
        damaged, whole = stores
        truncated = damaged / "row_prior/test/depth/c/1/0/0"
        truncated.write_bytes(truncated.read_bytes()[:100])
        flip_bit(damaged / "row_prior/test/depth", 0, frames_per_shard=2)
        found = cli("cache", "verify", damaged)
        assert found.exit_code == 1 and "3 problem(s) in 4 stored frames" in found.output
        assert all(f"frame {i} of" in found.output for i in (0, 2, 3)) and "frame 1 of" not in found.output
        repaired = cli("cache", "verify", "--repair", damaged)
        assert repaired.exit_code == 0 and "marked 3 damaged frame(s) not done" in repaired.output
        assert "verify --repair" not in repaired.output, "--repair ran: it must not ask to be run again"
        assert TeacherCache.open(damaged).done.tolist() == [False, True, False, False]
        rerun = cli(*cache_args(sample, damaged, sample.test_split))
        assert rerun.exit_code == 0 and "wrote 3 frames" in rerun.output and "store complete" in rerun.output
        assert_same_store(damaged, whole)
        assert "4 stored frames read, no problems" in cli("cache", "verify", damaged).output

    def test_lost_array_metadata_is_rebuilt_from_the_group_not_from_the_command(self, sample, stores, cli):
        damaged, whole = stores
        (damaged / "row_prior/test/depth/zarr.json").unlink()
        (damaged / "row_prior/test/done/zarr.json").write_text("{not json")
        rerun = cli(*cache_args(sample, damaged, sample.test_split, "--frames-per-shard", "32"))
        assert rerun.exit_code == 1 and "depth/zarr.json is missing or corrupt" in rerun.output
        info = cli("cache", "info", damaged)
        assert info.exit_code == 0 and "row_prior/test: unreadable: " in info.output and "--repair" in info.output
        assert cli("cache", "verify", damaged).exit_code == 1
        repaired = cli("cache", "verify", "--repair", damaged)
        assert "rebuilt depth/zarr.json, done/zarr.json from its attributes" in repaired.output
        assert repaired.exit_code == 0
        assert_same_store(damaged, whole)
        assert (damaged / "row_prior/test/depth/zarr.json").read_bytes() == (whole / "row_prior/test/depth/zarr.json").read_bytes()

    @pytest.mark.parametrize("fail_after", [1])  # a run failing before its first frame leaves no group: test_leases
    def test_a_failed_first_run_shows_as_incomplete_and_the_next_continues(self, sample, stores, cli, fail_after):
        _, whole = stores
        store = whole.parent / "failed.zarr"
        args = cache_args(sample, store, sample.test_split, "--teacher-arg", f"fail_after={fail_after}")
        try:  # the teacher's exception, or the one line a TeacherError makes of it
            assert cli(*args).exit_code != 0
        except RuntimeError as e:
            assert "failed as asked" in str(e)
        summary = json.loads(cli("cache", "info", store, "--json").output)["caches"][0]
        assert summary["complete"] is False and summary["done"] == 2 * fail_after and summary["frames"] == 4
        assert "incomplete" in cli("cache", "info", store).output
        rerun = cli(*cache_args(sample, store, sample.test_split))
        assert rerun.exit_code == 0 and f"wrote {4 - 2 * fail_after} frames" in rerun.output
        assert_same_store(store, whole)


def test_cache_teacher_refuses_group_names_before_loading_the_teacher(sample, tmp_path, cli):
    """Issue 9 case 12: names that would leave the store are one line, nothing is created."""
    for flag, name in (("--name", "../../x"), ("--split-name", "../..")):
        result = cli(*cache_args(sample, tmp_path / "s.zarr", sample.test_split, flag, name))
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"{flag} {name!r} is not a valid store group name" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_group_zarr_json_is_one_line_everywhere(tmp_path, cli):
    path = store(tmp_path / "s.zarr", 6)
    (path / "toy/test/zarr.json").write_text("{bad")
    for args in (("cache", "info", path), ("cache", "verify", path), ("cache", "rm", path, "--teacher", "toy")):
        result = cli(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert f"{path}/toy/test/zarr.json is corrupt" in result.output
    with pytest.raises(StoreError, match="toy/test/zarr.json is corrupt"):
        TeacherCache.open(path)


def test_older_store_formats_on_request_hold_the_same_maps(sample, tmp_path, cli):
    """--store-format reaches the store: formats 2 and 3 equal the default (the newest) frame for frame."""
    flags = {STORE_FORMAT: (), 3: ("--store-format", 3), 2: ("--store-format", 2)}
    for store_format, flag in flags.items():
        assert cli(*cache_args(sample, tmp_path / f"f{store_format}.zarr", sample.test_split, *flag)).exit_code == 0
        assert TeacherCache.open(tmp_path / f"f{store_format}.zarr").attrs["tiekd_store_format"] == store_format
    for store_format in (2, 3):
        assert_same_store(tmp_path / f"f{store_format}.zarr", tmp_path / f"f{STORE_FORMAT}.zarr")
    assert "format 2" in cli("cache", "info", tmp_path / "f2.zarr").output


@pytest.mark.parametrize(
    "edit, key",
    [(('"offset": 128', '"offset": 0'), "codecs"), (('"endian": "little"', '"endian": "big"'), "codecs"),
     (('"data_type": "uint16"', '"data_type": "int16"'), "data_type")],
    ids=["predictor offset", "byte order", "dtype"],
)  # fmt: skip
def test_edited_array_metadata_is_refused_then_rebuilt_by_repair(tmp_path, cli, edit, key):
    """A zarr.json edited to another codec parameter would decode every frame wrongly with every
    checksum passing: reads refuse it in one line, verify names it, verify --repair rebuilds it."""
    path = store(tmp_path / "s.zarr", 6)
    metadata = path / "toy/test/depth/zarr.json"
    original = metadata.read_text()
    assert edit[0] in original
    metadata.write_text(original.replace(edit[0], edit[1], 1))
    with pytest.raises(StoreError, match=f"depth/zarr.json is edited: its {key} differ from what the group's store"):
        TeacherCache.open(path)
    found = cli("cache", "verify", path)
    assert found.exit_code == 1 and "depth/zarr.json is edited" in found.output, found.output
    repaired = cli("cache", "verify", "--repair", path)
    assert "rebuilt depth/zarr.json" in repaired.output, repaired.output
    assert json.loads(metadata.read_text()) == json.loads(original)
    assert TeacherCache.open(path).depth(5)[0, 0] == pytest.approx(7.0, abs=1 / 256)
    assert cli("cache", "verify", path).exit_code == 0
