"""The train-student options of issue 17 reach what they configure: --colour-aug and
--rotate-teacher the training loader's augmentation, --weights the student's encoder and the
records of the run (run.json, checkpoints)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from support.commands import STUDENT, error_line, train_args
from support.runs import build, train_config

from tiekd.cli import main
from tiekd.cli_train import train_student_config
from tiekd.data.augment import draw_augmentation
from tiekd.pipeline.errors import ConfigError
from tiekd.stages.train_student import build_trainer, run
from tiekd.stages.training.config import check_config, with_earlier_defaults

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The only pretrained tag timm has for the test student.
STUDENT_WEIGHTS = f"{STUDENT}.r160_in1k"


def parsed(sample, store, tmp_path, *flags):
    """The TrainStudentConfig that ``tiekd train-student`` with the test flags and ``flags`` builds."""
    command = main.commands["train-student"]
    args = [str(a) for a in train_args(sample, store, tmp_path / "run", *flags)[1:]]
    with command.make_context("train-student", args) as ctx:
        return train_student_config(**ctx.params)


@pytest.mark.parametrize(
    "flags, colour_aug, rotate_teacher",
    [
        ((), "bts", True),
        (("--dpm-form", "code"), "bts", False),
        (("--colour-aug", "released", "--no-rotate-teacher"), "released", False),
        (("--dpm-form", "code", "--rotate-teacher"), "bts", True),
    ],
)
def test_augmentation_flags_reach_the_loader(sample, store, tmp_path, flags, colour_aug, rotate_teacher):
    cfg = parsed(sample, store, tmp_path, *flags)
    augment_cfg = build(cfg)[1].dataset.augment_cfg
    assert (augment_cfg.colour_aug, augment_cfg.rotate_teacher) == (colour_aug, rotate_teacher)
    assert (cfg.colour_aug, cfg.rotate_teacher) == (colour_aug, rotate_teacher)
    assert augment_cfg.brightness_range == (0.9, 1.1)  # KITTI's


def test_colour_form_changes_only_the_coloured_images(sample, store, tmp_path):
    """Same draws in both forms: geometry and teacher maps equal, images equal where no colour is drawn."""
    bts = build(train_config(sample, store, tmp_path))[1].dataset
    released = build(train_config(sample, store, tmp_path, colour_aug="released"))[1].dataset
    coloured = []
    for i in range(len(bts.records)):
        a, b = bts[(0, i)], released[(0, i)]
        assert torch.equal(a["teacher"], b["teacher"])
        coloured.append(draw_augmentation(np.random.default_rng([0, 0, i]), bts.augment_cfg).colour)
        assert torch.equal(a["image"], b["image"]) != coloured[-1]
    assert any(coloured) and not all(coloured)


def test_bad_colour_aug_is_one_line(sample, store, tmp_path, cli):
    line = error_line(cli(*train_args(sample, store, tmp_path / "run", "--colour-aug", "gamma")))
    assert "Invalid value for '--colour-aug': 'gamma' is not one of 'bts', 'released'" in line
    with pytest.raises(ConfigError, match="--colour-aug 'gamma' is not one of bts, released"):
        check_config(train_config(sample, store, tmp_path, colour_aug="gamma"))


def test_weights_reach_the_student_and_the_records(sample, store, tmp_path):
    cfg = parsed(sample, store, tmp_path, "--weights", "r160_in1k")
    assert cfg.weights == "r160_in1k"
    trainer = build_trainer(cfg, 4, torch.device("cpu"))
    assert trainer.model.encoder.pretrained_cfg["tag"] == "r160_in1k"
    assert trainer.model.arch["weights"] == "r160_in1k" and trainer.start_weights is None  # --no-pretrained
    pretrained = dataclasses.replace(trainer, cfg=dataclasses.replace(cfg, pretrained=True))
    assert pretrained.start_weights == pretrained.state()["start_weights"] == STUDENT_WEIGHTS


def test_weights_without_pretrained_is_one_line(sample, store, tmp_path, cli):
    line = error_line(cli(*train_args(sample, store, tmp_path / "run", "--weights", "r160_in1k")))
    assert "--weights r160_in1k names start weights, but --no-pretrained starts from none" in line
    args = [a for a in train_args(sample, store, tmp_path / "run", "--weights", "bogus") if a != "--no-pretrained"]
    assert f"--weights bogus is not a pretrained tag timm has for {STUDENT}; use one of {STUDENT_WEIGHTS}" in (
        error_line(cli(*args))
    )


def test_run_records_the_choices(sample, store, tmp_path):
    out = tmp_path / "run"
    run(train_config(sample, store, out, max_steps=1, colour_aug="released", rotate_teacher=False))
    written = json.loads((out / "run.json").read_text())
    assert (written["colour_aug"], written["rotate_teacher"], written["weights"]) == ("released", False, None)
    assert written["brightness_range"] == [0.9, 1.1]
    assert written["start_weights"] is None  # the test run starts from random weights
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert last["start_weights"] is None and last["config"]["colour_aug"] == "released"


def test_checkpoints_before_the_options_resume_as_they_trained():
    assert with_earlier_defaults({"dpm_form": "code"}) == {
        "dpm_form": "code",
        "colour_aug": "bts",
        "weights": None,
        "rotate_teacher": False,
        "init_from": None,
        "teacher_mix": [],
        "unlabelled": [],
    }
    assert with_earlier_defaults({"dpm_form": "paper", "colour_aug": "released"})["colour_aug"] == "released"
    assert with_earlier_defaults({"dpm_form": "paper"})["rotate_teacher"] is True
