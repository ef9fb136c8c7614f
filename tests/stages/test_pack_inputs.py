"""``tiekd cache pack`` and ``cache-teacher --with-inputs``: what is packed, shards, resume after
kill -9, the dask cluster, damage and the store's other commands."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import zarr
from support.commands import cache_args, error_line, tiekd_command

from tiekd.data.registry import get_dataset
from tiekd.pipeline.files import file_sha256
from tiekd.pipeline.store.inputs import PackedInputs
from tiekd.stages.caching.cluster import environment_kept

ARRAYS = ("image", "gt", "full_size", "box", "image_sha256", "gt_sha256", "done", "ids", "gt_ids")


def pack_args(sample, out, *extra, split=None) -> list:
    split = split or sample.train_split
    return ["cache", "pack", "--data-root", sample.data_root, "--gt-root", sample.gt_root, "--split", split,
            "--out", out, "--frames-per-shard", 2, *extra]  # fmt: skip


def packed_arrays(store, split="train") -> dict:
    group = zarr.open_group(f"{store}/_inputs/{split}", mode="r")
    return {name: group[name][:] for name in ARRAYS}


def assert_same_packing(a, b, split="train"):
    first, second = packed_arrays(a, split), packed_arrays(b, split)
    for name in ARRAYS:
        assert np.array_equal(first[name], second[name]), name


@pytest.fixture(scope="module")
def whole(sample, tmp_path_factory):
    """The sample's train split packed by one process."""
    from click.testing import CliRunner

    from tiekd.cli import main

    out = tmp_path_factory.mktemp("whole") / "s.zarr"
    assert CliRunner().invoke(main, [str(a) for a in pack_args(sample, out)]).exit_code == 0
    return out


def test_a_packed_frame_holds_the_files_inputs(sample, whole):
    kitti = get_dataset("kitti")
    records = kitti.read_split(sample.train_split)
    inputs = PackedInputs.open(str(whole), "train")
    assert inputs.ids == [r.rgb for r in records] and inputs.done.all()
    for i, record in enumerate(records):
        full = kitti.read_full_image(sample.data_root, record)
        assert np.array_equal(inputs.image(i), kitti.crop_to_cache(full))
        gt = kitti.read_aligned_gt(sample.gt_root, record, full.shape[:2])
        assert np.array_equal(inputs.gt(i), kitti.crop_to_cache(gt))
        assert tuple(inputs.full_size[i]) == full.shape[:2] and tuple(inputs.box[i]) == kitti.cache_crop_box(
            full.shape[:2]
        )
    arrays = packed_arrays(whole)
    assert arrays["image_sha256"][0] == file_sha256(sample.data_root / records[0].rgb)


def test_two_shards_equal_one_process(cli, sample, whole, tmp_path):
    first = cli(*pack_args(sample, tmp_path / "s.zarr", "--shard", "0/2"))
    assert first.exit_code == 0 and "incomplete" in first.output
    second = cli(*pack_args(sample, tmp_path / "s.zarr", "--shard", "1/2"))
    assert second.exit_code == 0 and "packed split complete: 8 frames" in second.output
    assert_same_packing(tmp_path / "s.zarr", whole)


def test_cache_teacher_with_inputs_packs_the_split(cli, sample, whole, tmp_path):
    result = cli(*cache_args(sample, tmp_path / "s.zarr", None, "--with-inputs", "--gt-root", sample.gt_root))
    assert result.exit_code == 0 and "packed split complete: 8 frames" in result.output, result.output
    assert_same_packing(tmp_path / "s.zarr", whole)
    info = cli("cache", "info", "--json", tmp_path / "s.zarr")
    assert [entry["teacher"] for entry in json.loads(info.output)["caches"]] == ["row_prior"]  # _inputs is no teacher


def test_another_split_under_the_same_name_is_refused(cli, sample, whole):
    result = cli(*pack_args(sample, whole, "--split-name", "train", split=sample.test_split))
    assert "was packed differently" in error_line(result)


def test_a_damaged_frame_is_one_line(cli, sample, tmp_path):
    args = cache_args(sample, tmp_path / "s.zarr", sample.test_split, "--with-inputs", "--gt-root", sample.gt_root)
    assert cli(*args).exit_code == 0
    shard = tmp_path / "s.zarr" / "_inputs" / "test" / "image" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = cli("evaluate", "--cache", tmp_path / "s.zarr", "--split", sample.test_split, "--device", "cpu",
                 "--workers", 0)  # fmt: skip
    assert "fail their CRC32C check" in error_line(result)


@pytest.mark.slow
def test_a_killed_pack_continues(cli, sample, whole, tmp_path, subprocess_env):
    """kill -9 mid-run: the rerun packs only the frames not marked done, and equals one whole run."""
    store = tmp_path / "s.zarr"
    args = pack_args(sample, store)
    args[args.index("--frames-per-shard") + 1] = 1
    process = subprocess.Popen(tiekd_command(*args), env=subprocess_env, stdout=subprocess.DEVNULL)
    deadline, done = time.time() + 120, 0
    while time.time() < deadline and not 1 <= done < 8:
        time.sleep(0.02)
        try:
            done = int(zarr.open_group(f"{store}/_inputs/train", mode="r")["done"][:].sum())
        except Exception:  # still being created
            continue
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 1 <= done < 8, "the run was not caught mid-way"
    result = cli(*args)
    written = int(result.output.split("packed ")[1].split()[0])
    assert result.exit_code == 0 and written < 8 and "packed split complete: 8 frames" in result.output
    assert_same_packing(store, whole)


@pytest.mark.slow
def test_with_inputs_on_a_local_cluster(cli, sample, whole, tmp_path):
    with environment_kept():
        args = cache_args(sample, tmp_path / "s.zarr", None, "--with-inputs", "--gt-root", sample.gt_root)
        result = cli(*args, "--cluster", "local:2")
    assert result.exit_code == 0 and "packed split complete: 8 frames" in result.output, result.output
    assert_same_packing(tmp_path / "s.zarr", whole)


@pytest.mark.parametrize("split", ["train", "test"])  # BTS folders; the labeled .mat
def test_nyu_evaluation_samples_from_the_packed_store_are_the_files(nyu_sample, tmp_path, split):
    import torch

    from tiekd.data.datasets import EvaluationSamples
    from tiekd.data.packed import PackedSource
    from tiekd.stages.pack_inputs import PackConfig
    from tiekd.stages.pack_inputs import run as pack

    nyu = get_dataset("nyu")
    data_root = nyu_sample.data_root if split == "train" else nyu_sample.eval_data_root
    gt_root = nyu_sample.gt_root if split == "train" else nyu_sample.eval_gt_root
    split_file = nyu_sample.train_split if split == "train" else nyu_sample.test_split
    pack(
        PackConfig(data_root=data_root, gt_root=gt_root, split=split_file, out=str(tmp_path / "s.zarr"), dataset="nyu")
    )
    records = nyu.read_split(split_file)
    files = EvaluationSamples(records, data_root, gt_root, dataset=nyu)
    packed = EvaluationSamples(records, None, None, dataset=nyu,
                               packed=PackedSource((str(tmp_path / "s.zarr"), split_file.stem), with_gt=True))  # fmt: skip
    for k in range(len(files)):
        a, b = files[k], packed[k]
        assert a["error"] == b["error"] == ""
        assert all(torch.equal(a[key], b[key]) for key in ("image", "gt", "full_size", "box"))


def test_info_lists_and_verify_repairs_a_packed_split(cli, sample, whole, tmp_path):
    import shutil

    store = tmp_path / "s.zarr"
    shutil.copytree(whole, store)
    info = cli("cache", "info", store)
    assert "packed inputs train: 8/8 frames (complete), kitti, with GT" in info.output
    assert "8 stored frames read, no problems" in cli("cache", "verify", store).output
    shard = store / "_inputs" / "train" / "gt" / "c" / "1" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[20] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = cli("cache", "verify", store)
    assert "1 problem(s) in 8 stored frames" in error_line(result) and "fail their CRC32C check" in result.output
    assert "marked 1 damaged frame(s) not packed" in cli("cache", "verify", "--repair", store).output
    result = cli(*pack_args(sample, store))
    assert "packed 1 frames" in result.output and "packed split complete" in result.output
    assert_same_packing(store, whole)
