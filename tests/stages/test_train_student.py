"""Stage two, ``tiekd train-student``: every method learns, resume after kill -9 is exact, the run
directory's records, every option reaching what it configures, refusals as one clean line.

Runs are tiny: the timm test encoder ``test_resnet`` (2.2 M parameters; any timm ``features_only``
encoder is a valid student) on 22x44 crops (``--scale 0.0625`` of 352x704), batch 2, a few steps,
one torch thread (see ``one_thread``).
"""

import dataclasses
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from support.commands import SCALE, STUDENT, TEACHER, error_line, train_args
from support.runs import assert_same, build, train_config

from tiekd.data.augment import AugmentConfig, draw_augmentation
from tiekd.data.images import read_rgb
from tiekd.data.kitti import kb_crop, read_split
from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint
from tiekd.pipeline.dpm import bin_edges
from tiekd.pipeline.errors import CheckpointError, ConfigError, TrainingError
from tiekd.pipeline.losses import tiekd_loss_terms
from tiekd.pipeline.methods import METHODS
from tiekd.pipeline.metrics import METRIC_NAMES
from tiekd.pipeline.sparsification import UNCERTAINTY_METRIC_NAMES
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.cache_teacher import CacheTeacherConfig
from tiekd.stages.cache_teacher import run as cache_run
from tiekd.stages.train_student import run
from tiekd.stages.training.log import read_jsonl

STEPS_PER_EPOCH = 4
"""8 training frames, batch 2."""
CHECKPOINT_KEYS = {
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "step",
    "epoch",
    "config",
    "architecture",
    "normalisation",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_cycle_lr(step: int, *, max_lr: float, total: int) -> float:
    """The authors' schedule in float64, independently of torch: lr of 0-based ``step``."""
    initial, final = max_lr / 25, max_lr / 25 / 100
    warm_end, end = 0.3 * total - 1, total - 1

    def cos(start, stop, fraction):
        return stop + (start - stop) / 2 * (math.cos(math.pi * fraction) + 1)

    if step <= warm_end:
        return cos(initial, max_lr, step / warm_end)
    return cos(max_lr, final, (step - warm_end) / (end - warm_end))


class TestEveryMethodLearns:
    @pytest.mark.parametrize("method", METHODS)
    def test_loss_decreases_on_a_fixed_batch(self, sample, store, tmp_path, method):
        # lr 2.5e-3 over 400 steps: the first steps of the warm-up run at about 1e-4, nearly constant.
        cfg = train_config(sample, store, tmp_path, method=method, lr=2.5e-3, epochs=100)
        trainer, loader = build(cfg)
        batch = next(iter(loader))
        assert batch["image"].shape == (2, 3, 22, 44)
        losses = [trainer.train_step(batch)[0] for _ in range(12)]
        assert all(math.isfinite(loss) for loss in losses)
        assert np.mean(losses[-3:]) < 0.99 * np.mean(losses[:3]), losses
        assert trainer.step == 12

    def test_the_paper_student_learns_tiekd(self, sample, store, tmp_path):
        cfg = train_config(sample, store, tmp_path, student="mobilenetv2", lr=2.5e-3, epochs=100)
        trainer, loader = build(cfg)
        assert trainer.model.input_multiple == 8  # the authors' output stride
        batch = next(iter(loader))
        losses = [trainer.train_step(batch)[0] for _ in range(12)]
        assert np.mean(losses[-3:]) < 0.99 * np.mean(losses[:3]), losses


class TestRunDirectory:
    def test_steps_log(self, run_dir):
        steps = read_jsonl(run_dir / "steps.jsonl")
        assert [s["step"] for s in steps] == list(range(1, 9))
        for s in steps:
            # TIE-KD: L = 10 * (alpha * L_DPM + (1 - alpha) * L_Depth), alpha 0.1
            assert s["loss"] == pytest.approx(10 * (0.1 * s["dpm"] + 0.9 * s["depth"]), rel=1e-5)
            assert s["lr"] == pytest.approx(one_cycle_lr(s["step"] - 1, max_lr=1e-3, total=8), rel=1e-6)
            assert s["step_seconds"] >= s["data_seconds"] >= 0

    def test_epochs_log(self, run_dir):
        steps, epochs = read_jsonl(run_dir / "steps.jsonl"), read_jsonl(run_dir / "epochs.jsonl")
        assert [(e["epoch"], e["step"]) for e in epochs] == [(1, 4), (2, 8)]
        for e in epochs:
            in_epoch = [s["loss"] for s in steps if e["step"] - STEPS_PER_EPOCH < s["step"] <= e["step"]]
            assert e["loss"] == pytest.approx(np.mean(in_epoch), rel=1e-12)
            # The depth metrics, then the DPM entropy's sparsification scores (a DPM student).
            assert list(e["val"]) == [*METRIC_NAMES, *UNCERTAINTY_METRIC_NAMES]

    def test_run_json(self, run_dir, sample, store):
        config = json.loads((run_dir / "run.json").read_text())
        assert config["student"] == STUDENT and config["method"] == "tiekd" and config["scale"] == SCALE
        assert config["crop"] == [352, 704] and config["epochs"] == 2 and config["sigma"] is None
        assert config["dpm_sigma"] == 0.8 and config["dpm_sigma_source"].startswith("paper form")
        assert config["loss_scale_applied"] == 10.0 and config["loss_scale_source"] == "TIE-KD's x10"
        assert config["option_sources"]["n_bins"] == "dataset kitti"
        assert config["total_steps"] == 8 and config["steps_per_epoch"] == STEPS_PER_EPOCH
        assert config["device"] == "cpu" and config["cache"] == f"{store}/row_prior/train"
        assert config["val_split"] == str(sample.test_split) and config["pretrained"] is False

    def test_checkpoints(self, run_dir):
        last = load_checkpoint(run_dir / "last.pt")
        assert CHECKPOINT_KEYS <= set(last)
        assert last["step"] == 8 and last["epoch"] == 2 and last["config"]["method"] == "tiekd"
        assert last["architecture"] == dict(encoder=STUDENT, head="dpm", n_bins=257, min_depth=1e-3, max_depth=80.0)
        assert len(last["normalisation"]["mean"]) == len(last["normalisation"]["std"]) == 3
        assert last["scheduler"]["last_epoch"] == 8
        student = student_from_checkpoint(last)
        assert all(torch.equal(student.state_dict()[k], v) for k, v in last["model"].items())

    def test_best_is_the_lowest_validation_rmse(self, run_dir):
        epochs = read_jsonl(run_dir / "epochs.jsonl")
        best_epoch = min(epochs, key=lambda e: e["val"]["rmse"])
        best = load_checkpoint(run_dir / "best.pt")
        assert best["step"] == best_epoch["step"]
        assert best["best"] == {"rmse": best_epoch["val"]["rmse"], "step": best_epoch["step"]}
        assert load_checkpoint(run_dir / "last.pt")["best"] == best["best"]

    def test_run_json_records_the_autocast_that_ran(self, sample, store, tmp_path):
        """--amp on the CPU runs in float32 (with a note): run.json says what ran."""
        run(train_config(sample, store, tmp_path, max_steps=1, amp="fp16"))
        assert json.loads((tmp_path / "run.json").read_text())["amp"] is None

    def test_best_pt_only_with_a_validation_split(self, sample, store, tmp_path):
        run(train_config(sample, store, tmp_path, max_steps=1))
        assert (tmp_path / "last.pt").is_file() and not (tmp_path / "best.pt").exists()
        assert "val" not in read_jsonl(tmp_path / "epochs.jsonl")[0]

    @pytest.mark.parametrize("teacher_input", [("--teacher-input", "22x76"), ()], ids=["given", "from the file"])
    def test_checkpoint_is_a_teacher(self, run_dir, sample, tmp_path, cli, teacher_input):
        """Without --teacher-input the teacher runs at the scale it was trained at (1/16: 22x76)."""
        result = cli(
            "cache-teacher",
            "--teacher",
            f"checkpoint:{run_dir / 'last.pt'}",
            "--data-root",
            sample.data_root,
            "--split",
            sample.test_split,
            "--out",
            tmp_path / "s.zarr",
            *teacher_input,
            "--no-flip-tta",
            "--workers",
            0,
            "--device",
            "cpu",
        )
        assert result.exit_code == 0, result.output
        cache = TeacherCache.open(tmp_path / "s.zarr")
        assert cache.attrs["teacher_input"] == [22, 76]
        student = student_from_checkpoint(load_checkpoint(run_dir / "last.pt")).eval()
        for record in read_split(sample.test_split):
            image = torch.from_numpy(kb_crop(read_rgb(sample.data_root / record.rgb)).copy()).permute(2, 0, 1)
            small = torch.nn.functional.interpolate(image[None].float() / 255, size=(22, 76), mode="bilinear")
            with torch.no_grad():
                depth = student.predict_depth(small)
            expected = torch.nn.functional.interpolate(depth, size=(352, 1216), mode="bilinear")[0, 0].numpy()
            assert np.abs(cache.depth_of(record.rgb) - expected).max() <= 1 / 512 + 1e-4


class TestOptionsReachTheRun:
    def test_loss_options_reach_the_objective_and_change_the_loss(self, sample, store, tmp_path):
        options = dict(alpha=0.3, dpm_form="code", n_bins=65, loss_top_row=160)
        trainer, loader = build(train_config(sample, store, tmp_path, sigma=2.0, **options))
        other, _ = build(train_config(sample, store, tmp_path, sigma=0.5, **options))
        objective = trainer.objective
        top = 10  # row 160 of the crop at scale 1/16
        assert (objective.method, objective.alpha, objective.sigma, objective.dpm_form, objective.top_row) == (
            "tiekd",
            0.3,
            2.0,
            "code",
            top,
        )
        assert trainer.model.arch["n_bins"] == 65 and trainer.model.output_conv.out_channels == 65
        torch.testing.assert_close(objective.edges, torch.linspace(1e-3, 80.0, 66, dtype=torch.float64).float())
        batch = next(iter(loader))
        logits = torch.randn(2, 65, 22, 44, generator=torch.Generator().manual_seed(0))
        losses = []
        for sigma, objective in ((2.0, trainer.objective), (0.5, other.objective)):
            teacher = batch["teacher"][..., top:, :]
            expected = tiekd_loss_terms(
                logits[..., top:, :],
                teacher,
                bin_edges(1e-3, 80.0, 65),
                alpha=0.3,
                sigma=sigma,
                form="code",
                valid=teacher > 0,
            )
            loss, terms = objective.loss(logits, batch)
            assert float(loss) == pytest.approx(float(expected["total"]), rel=1e-6)
            assert terms["dpm"] == pytest.approx(float(expected["dpm"]), rel=1e-6)
            losses.append(float(loss))
        assert abs(losses[0] - losses[1]) > 0.01  # the sigma of the options is the sigma of the loss

    def test_code_form_trains_with_the_released_sigma_unless_sigma_is_given(self, sample, store, tmp_path):
        code, loader = build(train_config(sample, store, tmp_path, dpm_form="code"))
        explicit, _ = build(train_config(sample, store, tmp_path, dpm_form="code", sigma=0.8))
        paper, _ = build(train_config(sample, store, tmp_path))
        assert (code.objective.sigma, explicit.objective.sigma, paper.objective.sigma) == (0.5, 0.8, 0.8)
        batch, top = next(iter(loader)), code.objective.top_row
        logits = torch.randn(2, 257, 22, 44, generator=torch.Generator().manual_seed(0))
        teacher = batch["teacher"][..., top:, :]
        for sigma, trainer in ((0.5, code), (0.8, explicit)):
            expected = tiekd_loss_terms(
                logits[..., top:, :], teacher, bin_edges(1e-3, 80.0, 257), sigma=sigma, form="code", valid=teacher > 0
            )
            assert float(trainer.objective.loss(logits, batch)[0]) == pytest.approx(float(expected["total"]), rel=1e-6)
        assert float(code.objective.loss(logits, batch)[0]) != pytest.approx(
            float(explicit.objective.loss(logits, batch)[0]), rel=1e-3
        )

    def test_shape_schedule_and_model_options(self, sample, store, tmp_path):
        cfg = train_config(
            sample,
            store,
            tmp_path,
            crop=(352, 512),
            scale=0.125,
            batch_size=4,
            lr=4e-3,
            epochs=3,
            method="res-ssim",
            seed=3,
        )
        trainer, loader = build(cfg)
        batch = next(iter(loader))
        assert batch["image"].shape == (4, 3, 44, 64) and batch["teacher"].shape == (4, 1, 44, 64)
        assert "gt" not in batch  # only supervised training reads the GT
        assert trainer.model.arch == dict(
            encoder=STUDENT, head="regression", n_bins=257, min_depth=1e-3, max_depth=80.0
        )
        assert (trainer.steps_per_epoch, trainer.total_steps) == (2, 6)
        group = trainer.optimizer.param_groups[0]
        assert group["max_lr"] == 4e-3 and group["lr"] == pytest.approx(4e-3 / 25)
        assert (group["betas"], group["weight_decay"]) == ((0.95, 0.99), 0.01)
        assert build(dataclasses.replace(cfg, max_steps=4))[0].total_steps == 4
        assert loader.sampler.order(0) != build(dataclasses.replace(cfg, seed=4))[1].sampler.order(0)

    def test_max_depth_and_supervised_gt(self, sample, tmp_path):
        cfg = train_config(sample, None, tmp_path, cache=None, method="supervised", max_depth=50.0)
        trainer, loader = build(cfg)
        batch = next(iter(loader))
        assert "teacher" not in batch and batch["gt"].shape == (2, 1, 22, 44) and (batch["gt"] > 0).any()
        assert trainer.model.arch["max_depth"] == 50.0 and trainer.model.max_depth == 50.0
        with torch.no_grad():
            depth = trainer.model(batch["image"])
        assert depth.max() <= 50.0

    def test_code_form_leaves_the_teacher_map_unrotated(self, sample, store, tmp_path):
        """The released code rotates the image but not the teacher map; only --dpm-form code does so."""
        paper = build(train_config(sample, store, tmp_path, scale=1.0))[1].dataset
        code = build(train_config(sample, store, tmp_path, scale=1.0, dpm_form="code"))[1].dataset
        assert paper.augment_cfg.rotate_teacher is True and code.augment_cfg.rotate_teacher is False
        key = next(
            (0, i) for i in range(8) if draw_augmentation(np.random.default_rng([0, 0, i]), AugmentConfig()).rotate
        )
        draws = draw_augmentation(np.random.default_rng([0, *key]), AugmentConfig())
        a, b = paper[key], code[key]
        assert torch.equal(a["image"], b["image"]) and not torch.equal(a["teacher"], b["teacher"])
        teacher = TeacherCache.open(store, "row_prior", "train").depth_of(paper.records[key[1]].rgb)
        teacher = teacher[:, ::-1] if draws.flip else teacher
        left = int(draws.left_fraction * (1216 - 704 + 1))
        np.testing.assert_array_equal(b["teacher"][0].numpy(), teacher[:, left : left + 704])
        assert (a["teacher"] == 0).any(), "the rotated teacher map has pixels rotated in from outside"


def cache_with_crop(sample, tmp_path, crop):
    path = tmp_path / "cropped.zarr"
    cache_run(
        CacheTeacherConfig(
            teacher=TEACHER,
            data_root=sample.data_root,
            split=sample.test_split,
            out=str(path),
            crop=crop,
            teacher_input=(44, 150),
            workers=0,
        )
    )
    return path


class TestRefusals:
    def test_cache_without_the_training_images(self, sample, store, tmp_path, cli):
        args = train_args(sample, store, tmp_path / "run")
        args[args.index("--split-name") + 1] = "test"
        line = error_line(cli(*args))
        assert "has no map for 8 of the 8 training images" in line and "run cache-teacher" in line
        assert not (tmp_path / "run").exists()

    def test_cache_of_another_depth_range(self, sample, store, tmp_path, cli):
        line = error_line(cli(*train_args(sample, store, tmp_path / "run", "--max-depth", 50)))
        assert "holds depth in [0.001, 80.0] m, this run uses [0.001, 50.0] m" in line

    def test_cache_of_another_crop(self, sample, tmp_path, cli):
        store = cache_with_crop(sample, tmp_path, (352, 1200))
        args = train_args(sample, store, tmp_path / "run")
        args[args.index("--split") + 1] = sample.test_split
        args[args.index("--split-name") + 1] = "test"
        assert "holds 352x1200 maps, this run needs the 352x1216 KB crop" in error_line(cli(*args))

    @pytest.mark.parametrize(
        "flag, value, fragment",
        [
            ("--student", "no_such_net", "Unknown student encoder 'no_such_net'"),
            ("--crop", "400x704", "--crop 400x704 is larger than the 352x1216 KB crop"),
            ("--sigma", "0", "--sigma 0.0 must be a positive"),
            ("--alpha", "1.5", "--alpha 1.5 must be in [0, 1]"),
            ("--lr", "-1", "--lr -1.0 must be positive"),
            ("--loss-top-row", "352", "--loss-top-row 352 must be a row of the 352-row --crop"),
            ("--method", "bogus", "Invalid value for '--method'"),
        ],
    )
    def test_bad_options(self, sample, store, tmp_path, cli, flag, value, fragment):
        assert fragment in error_line(cli(*train_args(sample, store, tmp_path / "run", flag, value)))

    def test_unknown_method_in_the_stage(self, sample, store, tmp_path):
        with pytest.raises(ConfigError, match="--method 'bogus' is not one of tiekd, res-mse"):
            run(train_config(sample, store, tmp_path, method="bogus"))

    def test_resume_of_a_finished_run_trains_nothing(self, sample, store, run_dir, tmp_path, cli):
        shutil.copytree(run_dir, tmp_path / "run")
        extra = ("--epochs", 2, "--val-split", sample.test_split, "--save-every", 1, "--resume")
        result = cli(*train_args(sample, store, tmp_path / "run", *extra))
        assert result.exit_code == 0, result.output
        assert "has already taken its 8 steps; nothing to train" in result.output
        for name in ("last.pt", "best.pt", "steps.jsonl", "epochs.jsonl"):
            assert (tmp_path / "run" / name).read_bytes() == (run_dir / name).read_bytes(), name

    def test_resume_without_a_run(self, sample, store, tmp_path, cli):
        line = error_line(cli(*train_args(sample, store, tmp_path / "run", "--resume")))
        assert "holds no last.pt to continue from; start without --resume" in line

    def test_existing_run_needs_resume_and_the_same_options(self, sample, store, run_dir, cli):
        before = (run_dir / "last.pt").read_bytes()
        extra = ("--epochs", 2, "--val-split", sample.test_split, "--save-every", 1)
        line = error_line(cli(*train_args(sample, store, run_dir, *extra)))
        assert "already holds a run; pass --resume" in line
        line = error_line(cli(*train_args(sample, store, run_dir, *extra, "--resume", "--lr", 0.01, "--sigma", 1)))
        assert "--resume with other options" in line and "lr 0.001 -> 0.01" in line and "sigma None -> 1.0" in line
        assert (run_dir / "last.pt").read_bytes() == before

    def test_resume_into_a_run_built_differently(self, sample, store, run_dir, tmp_path, cli):
        shutil.copy(run_dir / "last.pt", tmp_path / "last.pt")
        extra = ("--epochs", 2, "--val-split", sample.test_split, "--resume", "--n-bins", 65)
        assert "n_bins 257 -> 65" in error_line(cli(*train_args(sample, store, tmp_path, *extra)))
        trainer, _ = build(train_config(sample, store, tmp_path, n_bins=65))
        with pytest.raises(CheckpointError, match="n_bins.: 257.*this run builds"):
            trainer.load(load_checkpoint(tmp_path / "last.pt"), tmp_path / "last.pt")

    @pytest.mark.parametrize("damage", ["garbage", "truncated"])
    def test_resume_from_a_corrupt_checkpoint(self, sample, store, run_dir, tmp_path, cli, damage):
        data = b"not a checkpoint" if damage == "garbage" else (run_dir / "last.pt").read_bytes()[:100_000]
        (tmp_path / "last.pt").write_bytes(data)
        line = error_line(cli(*train_args(sample, store, tmp_path, "--resume")))
        assert f"checkpoint {tmp_path / 'last.pt'} is corrupt or not a torch file" in line

    def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(self, sample, store, tmp_path, cli):
        """A huge learning rate sends the weights to ~1e27 in one step; the next forward overflows."""
        diverging = ("--lr", 1e30, "--max-steps", 4)
        line = error_line(cli(*train_args(sample, store, tmp_path / "run", *diverging, "--save-every", 1)))
        assert re.search(r"became \S+ at step 2; stopped without saving, the last good checkpoint is .*last.pt", line)
        kept = load_checkpoint(tmp_path / "run" / "last.pt")
        assert kept["step"] == 1 and [s["step"] for s in read_jsonl(tmp_path / "run" / "steps.jsonl")] == [1]
        # the same first step, taken here: last.pt holds its result, not anything of the failed step 2
        trainer, loader = build(train_config(sample, store, tmp_path / "here", lr=1e30, max_steps=4))
        batches = iter(loader)
        trainer.train_step(next(batches))
        assert_same(kept["model"], trainer.model.state_dict())
        assert_same(kept["optimizer"], trainer.optimizer.state_dict())
        with pytest.raises(TrainingError, match="at step 2"):
            trainer.train_step(next(batches))
        for name, parameter in trainer.model.named_parameters():  # no update from the failed step
            assert torch.equal(parameter, kept["model"][name]), name
        line = error_line(cli(*train_args(sample, store, tmp_path / "early", *diverging)))
        assert "at step 2; stopped without saving, no checkpoint was written yet" in line
        assert not (tmp_path / "early" / "last.pt").exists()
