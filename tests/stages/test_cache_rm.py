"""``tiekd cache rm``: one group removed, everything else byte for byte as it was; incomplete
groups only with --force; unknown or unsafe names refused in one line."""

import numpy as np

from tiekd.pipeline.store.cache import CacheSpec, TeacherCache
from tiekd.pipeline.store.writer import CacheWriter

SPEC = CacheSpec("python:toy:make", None, "cd" * 32, (16, 24), None, True, 1e-3, 80.0)


def add(path, teacher, split, n_done):
    writer = CacheWriter.create_or_resume(str(path), teacher=teacher, split=split, spec=SPEC,
                                          ids=[f"f{i}.png" for i in range(4)], extra_attrs={}, frames_per_shard=2)
    writer.write(list(range(n_done)), np.full((n_done, 16, 24), 5.0, np.float32), np.zeros(n_done, np.int32))
    writer.finish()


def files(path, below):
    return {p: p.read_bytes() for p in (path / below).rglob("*") if p.is_file()}


def a_store(tmp_path):
    path = tmp_path / "s.zarr"
    add(path, "toy", "test", 4)
    add(path, "toy", "train", 2)
    add(path, "other", "test", 4)
    return path


def test_one_complete_split_is_removed_and_nothing_else(tmp_path, cli):
    path = a_store(tmp_path)
    kept = files(path, "toy/train") | files(path, "other")
    result = cli("cache", "rm", path, "--teacher", "toy", "--split", "test")
    assert result.exit_code == 0 and f"removed {path}/toy/test" in result.output
    assert not (path / "toy/test").exists() and files(path, "toy/train") | files(path, "other") == kept
    assert TeacherCache.open(path, "other", "test").complete


def test_an_incomplete_group_needs_force_and_the_teacher_goes_with_its_last_split(tmp_path, cli):
    path = a_store(tmp_path)
    refused = cli("cache", "rm", path, "--teacher", "toy")
    assert refused.exit_code == 1 and "toy/train is incomplete and may still be being written" in refused.output
    assert (path / "toy/test/depth").exists() and (path / "toy/train/depth").exists()
    removed = cli("cache", "rm", path, "--teacher", "toy", "--force")
    assert removed.exit_code == 0 and removed.output.count("removed") == 2
    assert not (path / "toy").exists() and TeacherCache.open(path).location.endswith("other/test")


def test_unknown_and_unsafe_names_are_one_line(tmp_path, cli):
    path = a_store(tmp_path)
    before = files(path, ".")
    for args, fragment in ((("--teacher", "nope"), "holds no teacher 'nope' (it has: other, toy)"),
                           (("--teacher", "toy", "--split", "val"), "holds no split 'val'"),
                           (("--teacher", "../x"), "--teacher '../x' is not a valid store group name")):
        result = cli("cache", "rm", path, *args)
        assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output
    assert cli("cache", "rm", tmp_path / "none.zarr", "--teacher", "toy").exit_code == 1
    assert not (tmp_path / "none.zarr").exists()
    assert files(path, ".") == before


def test_a_group_that_is_a_link_is_refused_and_its_target_kept(tmp_path, cli):
    """Deleting through a symbolic link would delete another store's maps: refused, nothing removed."""
    elsewhere = a_store(tmp_path)
    path = tmp_path / "linked.zarr"
    add(path, "own", "test", 4)
    (path / "toy").symlink_to(elsewhere / "toy", target_is_directory=True)
    (path / "own" / "train").symlink_to(elsewhere / "other" / "test", target_is_directory=True)
    before = files(elsewhere, ".") | files(path, "own/test")
    for args in (("--teacher", "toy", "--force"), ("--teacher", "own", "--split", "train")):
        result = cli("cache", "rm", path, *args)
        assert result.exit_code == 1 and "is a symbolic link; cache rm never deletes through a link" in result.output
    assert files(elsewhere, ".") | files(path, "own/test") == before
    assert (path / "toy").is_symlink() and (path / "own" / "train").is_symlink()


def test_removal_leaves_nothing_aside(tmp_path, cli):
    path = a_store(tmp_path)
    assert cli("cache", "rm", path, "--teacher", "toy", "--force").exit_code == 0
    assert sorted(p.name for p in path.iterdir()) == ["other", "zarr.json"]


def test_an_http_store_is_read_only_for_rm_and_repair(cli):
    for args in (("cache", "rm", "http://127.0.0.1:9/s.zarr", "--teacher", "toy"),
                 ("cache", "verify", "--repair", "http://127.0.0.1:9/s.zarr")):  # fmt: skip
        result = cli(*args)
        assert result.exit_code == 1 and "is an HTTP store, which tiekd only reads" in result.output
        assert "Traceback" not in result.output


def test_a_packed_split_is_removed_with_inputs_and_nothing_else(tmp_path, cli, sample):
    from support.commands import error_line

    from tiekd.pipeline.store.inputs import PackedInputs
    from tiekd.stages.pack_inputs import PackConfig
    from tiekd.stages.pack_inputs import run as pack

    path = a_store(tmp_path)
    for split in (sample.train_split, sample.test_split):
        pack(PackConfig(data_root=sample.data_root, gt_root=sample.gt_root, split=split, out=str(path)))
    kept = files(path, "toy") | files(path, "other") | files(path, "_inputs/test")
    result = cli("cache", "rm", path, "--inputs", "train")
    assert result.exit_code == 0 and f"removed {path}/_inputs/train" in result.output, result.output
    assert not PackedInputs.holds(str(path), "train") and PackedInputs.open(str(path), "test").done.all()
    assert files(path, "toy") | files(path, "other") | files(path, "_inputs/test") == kept
    assert cli("cache", "rm", path, "--inputs", "test").exit_code == 0
    assert not (path / "_inputs").exists(), "the _inputs group goes with its last packed split"
    assert "holds no packed split 'test' (it has: none)" in error_line(cli("cache", "rm", path, "--inputs", "test"))
    both = cli("cache", "rm", path, "--inputs", "test", "--teacher", "toy")
    assert both.exit_code == 2 and "give --teacher T [--split S] (a teacher's maps) or --inputs SPLIT" in both.output
