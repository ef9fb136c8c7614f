"""train-student on a group of image sources (no split file), and --init-from a student checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.commands import error_line
from support.own_images import write_description, write_images, write_video
from support.runs import build

from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.pipeline.files import file_sha256
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.training.config import TrainStudentConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEACHER = "python:toy_teachers:indoor_prior"


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A description file, four images and a 4-frame video cached with the toy indoor teacher."""
    from click.testing import CliRunner

    from tiekd.cli import main

    folder = tmp_path_factory.mktemp("own")
    write_images(folder / "imgs", range(4))
    write_video(folder / "v.mp4", 4)
    description = write_description(folder / "rover.yaml")
    args = ["cache-teacher", "--teacher", TEACHER, "--images", folder / "imgs", "--images", folder / "v.mp4",
            "--out", folder / "s.zarr", "--dataset", description, "--workers", "0", "--split-name", "own"]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder


def own_config(own, out, **changes) -> TrainStudentConfig:
    options = dict(data_root=None, split=None, out=out, cache=str(own / "s.zarr"), student="test_resnet",
                   batch_size=2, pretrained=False, workers=0, device="cpu", dataset=str(own / "rover.yaml"))  # fmt: skip
    return TrainStudentConfig(**(options | changes))


def test_samples_of_a_source_group_are_its_fitted_frames_and_maps(own, tmp_path):
    """The sample of (epoch, frame) is the frame's image and stored map, cut as a labelled frame is."""
    cfg = own_config(own, tmp_path / "run")
    _, loader = build(cfg)
    samples = loader.dataset
    cache = TeacherCache.open(own / "s.zarr")
    assert len(samples) == 8 and [r.id for r in samples.records] == cache.ids
    frame = samples.records[5]  # a video frame
    image, maps = samples._region(frame)
    np.testing.assert_array_equal(maps["teacher"], cache.depth(5))
    assert image.shape == (48, 64, 3) and "gt" not in maps
    sample = samples[(0, 5)]
    assert sample["image"].shape == (3, 32, 48) and sample["teacher"].shape == (1, 32, 48) and not sample["error"]


def test_train_on_a_source_group_and_fine_tune_from_its_checkpoint(own, tmp_path, cli):
    common = ["--cache", own / "s.zarr", "--dataset", own / "rover.yaml", "--student", "test_resnet",
              "--no-pretrained", "--batch-size", "2", "--max-steps", "2", "--workers", "0", "--device", "cpu"]  # fmt: skip
    result = cli("train-student", "--out", tmp_path / "a", *common)
    assert result.exit_code == 0, result.output
    checkpoint = tmp_path / "a" / "last.pt"
    result = cli("train-student", "--out", tmp_path / "b", "--init-from", checkpoint, *common)
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "b" / "run.json").read_text())
    assert recorded["init_from"] == {"path": str(checkpoint), "sha256": file_sha256(checkpoint), "step": 2,
                                     "dataset": str(own / "rover.yaml")}  # fmt: skip
    assert recorded["split"] is None and recorded["start_weights"] is None


def test_init_from_starts_at_the_checkpoints_weights(own, tmp_path):
    first = own_config(own, tmp_path / "a", max_steps=1)
    from tiekd.stages.train_student import run

    run(first)
    state = load_checkpoint(tmp_path / "a" / "last.pt")
    trainer, _ = build(own_config(own, tmp_path / "b", init_from=tmp_path / "a" / "last.pt"))
    ours = trainer.model.state_dict()
    assert ours.keys() == state["model"].keys()
    assert all(torch.equal(ours[k], state["model"][k]) for k in ours)
    assert trainer.step == 0 and trainer.optimizer.state == {}  # fine-tuning starts a fresh schedule


def test_another_student_or_a_supervised_run_is_one_line(own, tmp_path, cli):
    from tiekd.stages.train_student import run

    run(own_config(own, tmp_path / "a", max_steps=1))
    common = ["--cache", own / "s.zarr", "--dataset", own / "rover.yaml", "--no-pretrained", "--batch-size", "2",
              "--max-steps", "1", "--workers", "0"]  # fmt: skip
    line = error_line(cli("train-student", "--out", tmp_path / "b", "--student", "test_resnet", "--n-bins", "16",
                          "--init-from", tmp_path / "a" / "last.pt", *common))  # fmt: skip
    assert "holds another student (n_bins 32 in it vs 16 here)" in line
    line = error_line(cli("train-student", "--out", tmp_path / "c", "--method", "supervised", *common))
    assert "--method supervised without --split trains on a --cache group of image sources, which has no GT" in line


def test_a_changed_source_image_stops_the_run_in_one_line(own, tmp_path, cli):
    from PIL import Image

    changed = own / "changed"
    write_images(changed, range(2))
    store = tmp_path / "s.zarr"
    args = ["--dataset", own / "rover.yaml", "--workers", "0"]
    assert cli("cache-teacher", "--teacher", TEACHER, "--images", changed, "--out", store, *args).exit_code == 0
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(changed / "001.png")
    line = error_line(cli("train-student", "--cache", store, "--out", tmp_path / "r", "--student", "test_resnet",
                          "--no-pretrained", "--batch-size", "2", "--max-steps", "1", *args))  # fmt: skip
    assert "changed since it was listed (content hash differs)" in line
