"""Image sources packed into the store (cache-teacher --images --with-inputs, cache pack --images): the
packed frames are the fitted frames, and training reads them without the source files, step for step
as it reads the files."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
from PIL import Image
from support.commands import error_line
from support.own_images import write_description, write_images, write_video

from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.store.inputs import PackedInputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEACHER = "python:toy_teachers:indoor_prior"
TOP = 6
"""A 60x64 frame cropped to the 48x64 maps' shape (--fit crop) keeps rows 6..53: the description file
places its crop at the centre."""


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """Four 60x64 images and a 4-frame 60x64 video, cached with the toy teacher (--fit crop) and packed in
    the same run (``s.zarr``), and the same store without its packed split (``files.zarr``)."""
    from click.testing import CliRunner

    from tiekd.cli import main

    folder = tmp_path_factory.mktemp("packed-sources")
    write_images(folder / "imgs", range(4), size=(60, 64))
    write_video(folder / "v.mp4", 4, size=(60, 64))
    write_description(folder / "rover.yaml")
    args = ["cache-teacher", "--teacher", TEACHER, "--images", folder / "imgs", "--images", folder / "v.mp4",
            "--fit", "crop", "--out", folder / "s.zarr", "--dataset", folder / "rover.yaml", "--workers", "0",
            "--split-name", "own", "--with-inputs"]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "packed 8 frames" in result.output
    shutil.copytree(folder / "s.zarr", folder / "files.zarr")
    shutil.rmtree(folder / "files.zarr" / "_inputs")
    return folder


def decoded_independently(folder) -> list[np.ndarray]:
    """The 8 frames as PIL and PyAV decode them, before any fitting."""
    images = [np.asarray(Image.open(folder / "imgs" / f"{k:03d}.png").convert("RGB")) for k in range(4)]
    with av.open(str(folder / "v.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return images + frames


def test_packed_frames_are_the_frames_cropped_as_the_teacher_saw_them(packed):
    inputs = PackedInputs.open(str(packed / "s.zarr"), "own")
    group = TeacherCache.open(packed / "s.zarr", "indoor_prior", "own")
    assert inputs.ids == group.ids and inputs.done.all() and not inputs.attrs["with_gt"]
    assert inputs.attrs["split_sha256"] == group.spec.split_sha256  # the same frames' identity
    for i, frame in enumerate(decoded_independently(packed)):
        np.testing.assert_array_equal(inputs.image(i), frame[TOP : TOP + 48], err_msg=inputs.ids[i])
        assert tuple(inputs.full_size[i]) == (60, 64) and tuple(inputs.box[i]) == (TOP, 0)
        assert not inputs.gt(i).any()
    recorded = [json.loads(s)["sha256"] for s in group._group["sources"][:]]
    assert [str(s) for s in inputs._group["image_sha256"][:]] == recorded


def test_cache_pack_images_packs_what_the_teacher_pass_packed(packed, tmp_path, cli):
    out = tmp_path / "p.zarr"
    result = cli("cache", "pack", "--images", packed / "imgs", "--images", packed / "v.mp4", "--fit", "crop",
                 "--out", out, "--dataset", packed / "rover.yaml", "--split-name", "own")  # fmt: skip
    assert result.exit_code == 0, result.output
    ours, theirs = PackedInputs.open(str(out), "own"), PackedInputs.open(str(packed / "s.zarr"), "own")
    assert ours.ids == theirs.ids and ours.attrs["split_sha256"] == theirs.attrs["split_sha256"]
    for i in range(len(ours)):
        np.testing.assert_array_equal(ours.image(i), theirs.image(i))
    info = cli("cache", "info", out)
    assert "packed inputs own: 8/8 frames (complete), lab-rover, image sources fitted (crop), without GT" in info.output


def steps(run) -> list[dict]:
    lines = (run / "steps.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in lines]


def test_training_reads_the_packed_frames_without_the_files_as_it_reads_the_files(packed, tmp_path, cli):
    common = ["--teacher", "indoor_prior", "--split-name", "own", "--dataset", packed / "rover.yaml", "--student",
              "test_resnet", "--no-pretrained", "--batch-size", "2", "--max-steps", "3", "--workers", "0"]  # fmt: skip
    assert cli("train-student", "--cache", packed / "files.zarr", "--out", tmp_path / "files", *common).exit_code == 0
    away = tmp_path / "away"
    away.mkdir()
    for name in ("imgs", "v.mp4"):
        shutil.move(packed / name, away / name)
    try:
        result = cli("train-student", "--cache", packed / "s.zarr", "--out", tmp_path / "packed", *common)
    finally:
        for name in ("imgs", "v.mp4"):
            shutil.move(away / name, packed / name)
    assert result.exit_code == 0, result.output
    assert steps(tmp_path / "packed") == steps(tmp_path / "files") and len(steps(tmp_path / "files")) == 3


def test_a_packed_split_of_other_frames_or_unfinished_is_one_line(packed, tmp_path, cli):
    store = tmp_path / "s.zarr"
    shutil.copytree(packed / "files.zarr", store)
    args = ["--dataset", packed / "rover.yaml", "--split-name", "own"]
    other = cli("cache", "pack", "--images", packed / "imgs", "--fit", "crop", "--out", store, *args)
    assert other.exit_code == 0, other.output
    train = ["train-student", "--cache", store, "--teacher", "indoor_prior", "--out", tmp_path / "r", "--student",
             "test_resnet", "--no-pretrained", "--batch-size", "2", "--max-steps", "1", "--workers", "0", *args]  # fmt: skip
    line = error_line(cli(*train))
    assert f"{store}/_inputs/own packs other frames than {store}/indoor_prior/own was cached from" in line
    assert "tiekd cache rm --inputs own" in line
    again = cli("cache", "pack", "--images", packed / "imgs", "--images", packed / "v.mp4", "--fit", "crop",
                "--out", store, "--overwrite", *args)  # fmt: skip
    assert again.exit_code == 0, again.output
    PackedInputs.open(str(store), "own").unmark([5])  # as cache verify --repair does to a damaged frame
    line = error_line(cli(*train))
    assert "has not packed 1 of the 8 image-source frames (first: " in line and "v.mp4#1" in line


def test_cache_pack_refuses_mixed_or_missing_sources_in_one_line(packed, sample, tmp_path, cli):
    out = ["--out", tmp_path / "p.zarr"]
    both = cli("cache", "pack", "--images", packed / "imgs", "--split", sample.test_split,
               "--data-root", sample.data_root, *out)  # fmt: skip
    assert "give either --split (with --data-root) or --images, not both or neither" in error_line(both)
    assert "not both or neither" in error_line(cli("cache", "pack", *out))
    gt = cli("cache", "pack", "--images", packed / "imgs", "--gt-root", sample.gt_root, *out)
    assert "--gt-root belongs to --split; image sources carry no GT" in error_line(gt)
    whole = cli("cache", "pack", "--images", packed / "imgs", "--dataset", packed / "rover.yaml", *out)
    assert "is 60x64, another shape than the 48x64 maps" in error_line(whole)
    assert not (tmp_path / "p.zarr").exists()
