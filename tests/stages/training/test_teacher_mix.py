"""train-student --teacher-mix: TIE-KD from two or more teacher groups of the same frames."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from support.commands import TEACHER, error_line, train_args
from support.runs import build, train_config

from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.pipeline.losses import tiekd_loss_terms
from tiekd.pipeline.store.cache import TeacherCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stores(sample, tmp_path_factory):
    """Groups a, a_copy (the same teacher again) and b (another seed) over the train split; rev: the split reversed."""
    from click.testing import CliRunner

    from tiekd.cli import main

    path = tmp_path_factory.mktemp("mix") / "s.zarr"
    reversed_split = path.parent / "train.txt"
    reversed_split.write_text("\n".join(reversed(sample.train_split.read_text().splitlines())) + "\n")
    for name, split, extra in [("a", sample.train_split, []), ("a_copy", sample.train_split, []),
                               ("b", sample.train_split, ["--teacher-arg", "seed=1"]), ("rev", reversed_split, [])]:  # fmt: skip
        args = ["cache-teacher", "--teacher", TEACHER, "--data-root", sample.data_root, "--split", split, "--out",
                path, "--name", name, "--teacher-input", "88x304", "--workers", "0", *extra]  # fmt: skip
        assert CliRunner().invoke(main, [str(a) for a in args]).exit_code == 0
    return path


def first_batch(cfg):
    trainer, loader = build(cfg)
    return trainer, next(iter(loader))


def test_each_teachers_maps_come_with_the_same_augmentation(sample, stores, tmp_path):
    _, mixed = first_batch(train_config(sample, stores, tmp_path / "m", teacher_mix=("a=1", "b=3")))
    _, alone_a = first_batch(train_config(sample, stores, tmp_path / "a", teacher="a"))
    _, alone_b = first_batch(train_config(sample, stores, tmp_path / "b", teacher="b"))
    assert torch.equal(mixed["teacher"], alone_a["teacher"]) and torch.equal(mixed["teacher_1"], alone_b["teacher"])
    assert not torch.equal(mixed["teacher"], mixed["teacher_1"])


def test_a_mixture_of_one_teacher_with_itself_is_tiekd(sample, stores, tmp_path):
    trainer, batch = first_batch(train_config(sample, stores, tmp_path / "m", teacher_mix=("a=1", "a_copy=2")))
    torch.manual_seed(0)
    logits = torch.randn(batch["image"].shape[0], trainer.cfg.n_bins, *batch["image"].shape[-2:])
    loss, terms = trainer.objective.loss(logits, batch)
    top = trainer.objective.top_row
    teacher = batch["teacher"][..., top:, :]
    expected = tiekd_loss_terms(logits[..., top:, :], teacher, trainer.objective.edges, alpha=0.1,
                                sigma=trainer.objective.sigma, valid=teacher > 0, scale=10.0)  # fmt: skip
    # float32 maps: the same sums in another order (the float64 comparison is tests/pipeline/test_mixture.py)
    assert float(loss) == pytest.approx(float(expected["total"]), rel=1e-4)
    assert terms["dpm"] == pytest.approx(float(expected["dpm"]), rel=1e-4)


def test_a_mixture_trains_and_other_frames_are_one_line(cli, sample, stores, tmp_path):
    result = cli(*train_args(sample, stores, tmp_path / "r", "--max-steps", "2", "--teacher-mix", "a=1",
                             "--teacher-mix", "b=1"))  # fmt: skip
    assert result.exit_code == 0, result.output
    line = error_line(
        cli(*train_args(sample, stores, tmp_path / "s", "--teacher-mix", "a=1", "--teacher-mix", "rev=1"))
    )
    assert "--teacher-mix:" in line and "/rev/train holds other frames than" in line
    line = error_line(cli(*train_args(sample, stores, tmp_path / "t", "--teacher-mix", "a=1")))
    assert "--teacher-mix takes two or more different teacher groups" in line


def test_every_teacher_of_a_mixture_is_recorded_and_a_replaced_one_refuses_the_resume(cli, sample, stores, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(stores, store)
    args = train_args(sample, store, tmp_path / "r", "--epochs", 1, "--teacher-mix", "a=1", "--teacher-mix", "b=1")
    assert cli(*args).exit_code == 0
    identity = load_checkpoint(tmp_path / "r" / "last.pt")["cache"]
    assert identity["group"] == "a/train" and [g["group"] for g in identity["groups"]] == ["b/train"]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["cache_identity"] == identity
    assert identity["groups"][0]["teacher_sha256"] == TeacherCache.open(store, "b", "train").spec.teacher_sha256
    assert cli(*args, "--resume").exit_code == 0  # the same groups: it continues (here: nothing left to do)
    # b replaced by another teacher (other weights) under the same name: the first teacher alone is unchanged
    recache = ["cache-teacher", "--teacher", TEACHER, "--data-root", sample.data_root, "--split", sample.train_split,
               "--out", store, "--name", "b", "--teacher-input", "88x304", "--workers", "0", "--teacher-arg", "seed=2",
               "--overwrite"]  # fmt: skip
    assert cli(*recache).exit_code == 0
    line = error_line(cli(*args, "--resume"))
    assert line.startswith(f"Error: --resume with another teacher cache than the run in {tmp_path / 'r'} (b/train ")
    assert "teacher_sha256:" in line
