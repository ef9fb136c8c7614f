"""`tiekd cache info` and `tiekd cache verify` on real stores, sound and damaged."""

import json

import numpy as np

from tiekd.pipeline.cache import CacheSpec
from tiekd.pipeline.cache_writer import CacheWriter

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
    table = cli("cache", "info", path).output
    assert "toy/test: 4/6 frames" in table and "teacher python:toy:make" in table


def test_verify_sound_store(tmp_path, cli):
    result = cli("cache", "verify", store(tmp_path / "s.zarr", 6))
    assert result.exit_code == 0 and "6 stored frames read, no problems" in result.output


def test_verify_finds_a_frame_marked_done_without_data(tmp_path, cli):
    path = store(tmp_path / "s.zarr", 6)
    shard = next(p for p in (path / "toy/test/depth").rglob("*") if p.is_file() and p.name != "zarr.json")
    shard.unlink()  # a lost shard file: its frames are marked done but read as 0
    result = cli("cache", "verify", path)
    assert result.exit_code == 1 and "is marked done but has unwritten pixels" in result.output
    assert "Traceback" not in result.output


def test_verify_reports_a_corrupt_shard_in_one_line(tmp_path, cli):
    path = store(tmp_path / "s.zarr", 6)
    shard = next(p for p in (path / "toy/test/depth").rglob("*") if p.is_file() and p.name != "zarr.json")
    shard.write_bytes(b"\x00" * 40)
    result = cli("cache", "verify", path)
    assert result.exit_code == 1 and "cannot be read" in result.output and "Traceback" not in result.output


def test_info_on_a_missing_store(tmp_path, cli):
    result = cli("cache", "info", tmp_path / "none.zarr")
    assert result.exit_code == 1 and "no teacher cache at" in result.output
