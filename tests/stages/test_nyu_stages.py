"""NYU Depth v2 through every stage: cache-teacher from the labeled .mat, evaluate against an
independent NumPy version of the NYU protocol, refusals of a store of the other dataset, a TIE-KD
run with the NYU settings, and the NYU demo."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from support.commands import error_line
from support.runs import build

from tiekd.data.images import write_depth_png
from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.training.config import TrainStudentConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEACHER = "python:toy_teachers:indoor_prior"
TEACHER_INPUT = ("--teacher-input", "60x80")
COMMON = ("--dataset", "nyu", "--workers", 0, "--device", "cpu")


def ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def store(nyu_sample, tmp_path_factory):
    """The toy indoor teacher over the sample's train split (folders) and test split (the .mat)."""
    from click.testing import CliRunner

    from tiekd.cli import main

    path = tmp_path_factory.mktemp("nyu_store") / "s.zarr"
    splits = ((nyu_sample.data_root, nyu_sample.train_split), (nyu_sample.eval_data_root, nyu_sample.test_split))
    for root, split in splits:
        args = ["cache-teacher", "--teacher", TEACHER, "--data-root", root, "--split", split, "--out", path]
        args += ["--name", "t"]
        ok(CliRunner().invoke(main, [str(a) for a in (*args, *TEACHER_INPUT, *COMMON)], catch_exceptions=False))
    return path


def nyu_reference(nyu_sample, store) -> list[dict]:
    """The NYU protocol written out in float64 NumPy: GT from h5py transposed by hand, prediction
    clamped to [1e-3, 10], valid 1e-3 < gt < 10 inside rows 45:471, cols 41:601; per-image metrics."""
    cache = TeacherCache.open(store, "t", "test")
    scores = []
    with h5py.File(nyu_sample.eval_gt_root, "r") as f:
        for line in nyu_sample.test_split.read_text().splitlines():
            rgb = line.split()[0]
            # BTS's extraction (raw depth, float32 product truncated to uint16 millimetres), read back
            # as BTS's eval_with_pngs.py does: float32 / 1000.
            mm = (f["rawDepths"][int(rgb[-9:-4])].T * np.float32(1000)).astype(np.uint16)
            gt = (mm.astype(np.float32) / np.float32(1000)).astype(np.float64)
            pred = np.clip(cache.depth_of(rgb).astype(np.float64), 1e-3, 10.0)
            crop = np.zeros_like(gt, bool)
            crop[45:471, 41:601] = True
            valid = crop & (gt > 1e-3) & (gt < 10.0)
            g, p = gt[valid], pred[valid]
            ratio = np.maximum(g / p, p / g)
            scores.append(
                {
                    "abs_rel": np.mean(np.abs(p - g) / g),
                    "rmse": np.sqrt(np.mean((p - g) ** 2)),
                    "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
                    "d1": np.mean(ratio < 1.25),
                    "silog": 100 * np.sqrt(np.var(np.log(p) - np.log(g))),
                }
            )
    return scores


class TestCacheAndEvaluate:
    def test_store_records_the_dataset_and_its_480x640_maps(self, cli, store):
        assert "dataset nyu, crop 480x640" in ok(cli("cache", "info", store)).output
        cache = TeacherCache.open(store, "t", "test")
        assert cache.complete and cache.spec.dataset == "nyu" and cache.spec.crop == (480, 640)
        assert cache.attrs["maps"] == "480x640 full image of each NYU Depth v2 image, pixel-aligned with it"
        assert cache.depth(0).shape == (480, 640) and 0 < cache.depth(0).min() and cache.depth(0).max() <= 10

    def test_evaluation_equals_the_numpy_nyu_protocol(self, cli, nyu_sample, store, tmp_path):
        out = tmp_path / "r.json"
        args = ("--data-root", nyu_sample.eval_data_root, "--gt-root", nyu_sample.eval_gt_root)
        result = ok(cli("evaluate", "--cache", store, "--teacher", "t", *args, "--split", nyu_sample.test_split,
                        "--json", out, *COMMON))
        report = json.loads(out.read_text())
        assert report["protocol"]["dataset"] == "nyu" and report["protocol"]["crop"] == "eigen"
        assert (report["protocol"]["min_depth"], report["protocol"]["max_depth"]) == (1e-3, 10.0)
        expected = nyu_reference(nyu_sample, store)
        assert len(report["per_image"]) == len(expected) == 2
        for got, want in zip(report["per_image"], expected):
            assert {k: got[k] for k in want} == pytest.approx(want, rel=1e-9)
        assert report["metrics"]["rmse"] == pytest.approx(np.mean([m["rmse"] for m in expected]), rel=1e-9)
        assert "eigen crop on the 480x640 full image" in result.output

    def test_folders_and_mat_evaluate_alike(self, cli, nyu_sample, store, tmp_path):
        """The extracted test folder holds the .mat's frames (same GT, JPEG images): equal metrics of a store."""
        folder = nyu_sample.train_split.parent.parent / "official_splits" / "test"
        runs = {}
        for name, root in (("mat", nyu_sample.eval_data_root), ("folder", folder)):
            out = tmp_path / f"{name}.json"
            ok(cli("evaluate", "--cache", store, "--teacher", "t", "--data-root", root, "--gt-root", root,
                   "--split", nyu_sample.test_split, "--json", out, *COMMON))
            runs[name] = json.loads(out.read_text())["metrics"]
        assert runs["folder"] == runs["mat"]

    def test_a_store_of_the_other_dataset_is_refused(self, cli, nyu_sample, store):
        folder = nyu_sample.train_split.parent.parent / "official_splits" / "test"
        args = ("--cache", store, "--teacher", "t", "--data-root", folder, "--gt-root", folder,
                "--split", nyu_sample.test_split, "--workers", 0, "--device", "cpu")
        line = error_line(cli("evaluate", *args, "--dataset", "kitti"))
        assert "cached for --dataset nyu, this run is --dataset kitti" in line
        train = ("--cache", store, "--teacher", "t", "--data-root", folder, "--split", nyu_sample.test_split,
                 "--out", "unused", "--dataset", "kitti", "--no-pretrained")
        assert "cached for --dataset nyu, this run is --dataset kitti" in error_line(cli("train-student", *train))


class TestBadInputThroughTheStages:
    def test_frame_beyond_the_labeled_file(self, cli, nyu_sample, tmp_path):
        split = tmp_path / "test.txt"
        split.write_text("bathroom/rgb_00099.jpg bathroom/sync_depth_00099.png 518.8579")
        args = ("--teacher", TEACHER, "--data-root", nyu_sample.eval_data_root, "--split", split)
        line = error_line(cli("cache-teacher", *args, "--out", tmp_path / "s.zarr", *COMMON))
        assert "selects frame 99 but" in line and "holds 4 frames" in line
        assert not (tmp_path / "s.zarr").exists()

    def test_gt_in_metres(self, cli, nyu_sample, store, tmp_path):
        folder = tmp_path / "test"
        shutil.copytree(nyu_sample.train_split.parent.parent / "official_splits" / "test", folder)
        first = nyu_sample.test_split.read_text().split()[1]
        write_depth_png(folder / first, np.full((480, 640), 2.5), scale=1.0)
        args = ("--cache", store, "--teacher", "t", "--data-root", folder, "--gt-root", folder)
        line = error_line(cli("evaluate", *args, "--split", nyu_sample.test_split, *COMMON))
        assert "metres, not the millimetres" in line


def test_tiekd_run_takes_the_nyu_settings(cli, nyu_sample, store, tmp_path, sample):
    out = tmp_path / "run"
    val = ("--val-split", nyu_sample.test_split, "--val-data-root", nyu_sample.eval_data_root, "--val-gt-root",
           nyu_sample.eval_gt_root)
    ok(cli("train-student", "--cache", store, "--teacher", "t", "--data-root", nyu_sample.data_root, "--split",
           nyu_sample.train_split, "--out", out, "--student", "test_resnet", "--max-steps", 2, "--batch-size", 2,
           "--scale", 0.125, "--no-pretrained", *val, *COMMON))
    run = json.loads((out / "run.json").read_text())
    settings = {k: run[k] for k in ("dataset", "n_bins", "min_depth", "max_depth", "crop", "loss_top_row")}
    assert settings == dict(dataset="nyu", n_bins=49, min_depth=1e-3, max_depth=10.0, crop=[416, 544], loss_top_row=0)
    assert run["dpm_sigma"] == 0.15 and run["brightness_range"] == [0.75, 1.25]
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 2 and state["architecture"]["n_bins"] == 49 and state["architecture"]["max_depth"] == 10.0
    [epoch] = [json.loads(line) for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert epoch["val"]["rmse"] > 0  # validated on the labeled file's frames
    kitti = cli("evaluate", "--checkpoint", out / "last.pt", "--data-root", sample.data_root, "--gt-root",
                sample.gt_root, "--split", sample.test_split, "--workers", 0, "--device", "cpu")  # fmt: skip
    assert kitti.exit_code == 0, kitti.output
    assert f"note: {out / 'last.pt'} was trained on NYU Depth v2; scoring it under KITTI's protocol" in kitti.output


def test_nyu_brightness_reaches_the_loader(nyu_sample, store, tmp_path):
    """Brightness U(0.75, 1.25) on NYU (the authors' NYU configs, BTS); gamma and colour stay U(0.9, 1.1)."""
    options = dict(cache=str(store), teacher="t", student="test_resnet", pretrained=False, workers=0, batch_size=2)
    options |= dict(device="cpu")
    cfg = TrainStudentConfig(nyu_sample.data_root, nyu_sample.train_split, tmp_path / "r", dataset="nyu", **options)
    augment_cfg = build(cfg)[1].dataset.augment_cfg
    assert (augment_cfg.brightness_range, augment_cfg.colour_range) == ((0.75, 1.25), (0.9, 1.1))


def test_nyu_demo_runs_the_whole_pipeline(cli, tmp_path):
    out = tmp_path / "demo"
    result = ok(cli("demo", "--dataset", "nyu", "--quick", "--out", out, "--device", "cpu"))
    for step in range(1, 7):
        assert f"== {step}/6" in result.output
    results = (out / "results.md").read_text()
    assert "NYU Depth v2 protocol: full image, flip TTA, Eigen crop, depth in [0.001, 10] m" in results
    assert (out / "data" / "nyu_depth_v2_labeled.mat").is_file()
    assert TeacherCache.open(out / "teacher-cache.zarr", "teacher", "test").spec.dataset == "nyu"
