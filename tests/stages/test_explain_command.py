"""``tiekd explain`` end to end on the sample: files, figure count, the HTML that shows them, pixels
given by hand, and the refusals."""

import json
import re

import pytest
import torch
from PIL import Image

from tiekd.data.kitti import KITTI, read_split
from tiekd.pipeline.checkpoint import save_checkpoint
from tiekd.pipeline.students import build_student

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(test_split_store):
    return test_split_store


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random students that run at 1/16 of the KB crop (22x76), as a --scale 0.0625 run does."""
    folder = tmp_path_factory.mktemp("students")
    paths = {}
    for head in ("dpm", "regression"):
        torch.manual_seed(0)
        model = build_student("test_resnet", head=head, **(KITTI.depth_bins | {"n_bins": 24}))
        state = {"model": model.state_dict(), "architecture": model.arch, "input_scale": 0.0625}
        paths[head] = folder / f"{head}.pt"
        save_checkpoint(paths[head], state | {"config": {"sigma": 1.5, "dpm_form": "code"}})
    return paths


def explain_args(sample, checkpoint, out, *extra):
    return [
        "explain", "--checkpoint", checkpoint, "--data-root", sample.data_root, "--gt-root", sample.gt_root,
        "--split", sample.test_split, "--out", out, "--device", "cpu", *extra,
    ]  # fmt: skip


def test_figures_and_an_offline_index(sample, store, checkpoints, tmp_path, cli):
    out = tmp_path / "explain"
    result = cli(*explain_args(sample, checkpoints["dpm"], out, "--cache", store, "--images", "2"))
    assert result.exit_code == 0, result.output
    assert "wrote 3 figure(s)" in result.output
    expected = ["image-000.png", "image-001.png", "index.html", "sparsification.png"]
    assert sorted(p.name for p in out.iterdir()) == expected
    for name in ("image-000.png", "image-001.png"):
        with Image.open(out / name) as figure:
            assert figure.width >= 1200 and figure.height >= 800
    page = (out / "index.html").read_text()
    assert re.findall(r'<img src="([^"]+)"', page) == ["image-000.png", "image-001.png", "sparsification.png"]
    assert page.count("<figcaption>") == 3 and "http" not in page and "<script" not in page
    with_gt = [r.rgb for r in read_split(sample.test_split) if r.gt is not None]
    for rgb in with_gt[:2]:
        assert rgb in page
    for kind in ("highest entropy", "highest error", "depth edge", "confident and correct"):
        assert kind in page
    assert "DPM sigma 1.5 m, form code" in page  # the checkpoint's own DPM settings
    assert "AUSE (RMSE)" in page


def test_pixels_by_hand_without_a_cache(sample, checkpoints, tmp_path, cli):
    out = tmp_path / "explain"
    with_gt = [r.rgb for r in read_split(sample.test_split) if r.gt is not None]
    args = explain_args(sample, checkpoints["dpm"], out, "--ids", with_gt[-1], "--pixel", "200,600", "--pixel", "0,0")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    assert "pixel (200, 600) at row 200, col 600" in page and "pixel (0, 0)" in page
    assert with_gt[-1] in page and "teacher not given" in page and "highest entropy" not in page


@pytest.mark.parametrize(
    "head, extra, fragment",
    [
        ("regression", (), "explain needs a DPM student"),
        ("dpm", ("--pixel", "352,10"), "--pixel 352,10 is outside the 352x1216 KB crop"),
        ("dpm", ("--pixel", "3;4"), "is not ROW,COL"),
        ("dpm", ("--ids", "nowhere.png"), "--ids nowhere.png is not a record"),
    ],
)
def test_refusals(sample, checkpoints, tmp_path, cli, head, extra, fragment):
    result = cli(*explain_args(sample, checkpoints[head], tmp_path / "x", *extra))
    assert result.exit_code != 0 and fragment in result.output and "Traceback" not in result.output


def test_the_dpm_sigma_training_used(sample, checkpoints, tmp_path, cli):
    """A code-form run without --sigma trained with the released code's 0.5 m: explain uses it too."""
    from tiekd.pipeline.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoints["dpm"])
    save_checkpoint(tmp_path / "code.pt", state | {"config": {"sigma": None, "dpm_form": "code"}})
    result = cli(*explain_args(sample, tmp_path / "code.pt", tmp_path / "x", "--pixel", "300,600"))
    assert result.exit_code == 0, result.output
    assert "DPM sigma 0.5 m, form code" in (tmp_path / "x" / "index.html").read_text()


def test_curves_of_the_whole_evaluated_set(sample, store, checkpoints, tmp_path, cli):
    evaluation = tmp_path / "evaluation.json"
    evaluate = ["evaluate", "--data-root", sample.data_root, "--gt-root", sample.gt_root, "--split", sample.test_split]
    result = cli(*evaluate, "--checkpoint", checkpoints["dpm"], "--json", evaluation, "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = tmp_path / "explain"
    result = cli(*explain_args(sample, checkpoints["dpm"], out, "--pixel", "300,600", "--evaluation", evaluation))
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    assert '<img src="sparsification-evaluated.png"' in page
    assert "whole evaluated set" in page and "3 images" in page
    teacher_json = tmp_path / "teacher.json"
    assert cli(*evaluate, "--cache", store, "--json", teacher_json, "--workers", "0").exit_code == 0
    result = cli(*explain_args(sample, checkpoints["dpm"], out, "--pixel", "300,600", "--evaluation", teacher_json))
    assert result.exit_code != 0 and "holds no sparsification curves" in result.output
    # A JSON of tiekd's definition before issue 17 (100 points, no end point) is refused in one line.
    old = json.loads(evaluation.read_text())
    old["sparsification"] = {m: {k: [0.1] * 100 for k in c} for m, c in old["sparsification"].items()}
    (tmp_path / "old.json").write_text(json.dumps(old))
    result = cli(*explain_args(sample, checkpoints["dpm"], out, "--pixel", "300,600", "--evaluation", tmp_path / "old.json"))
    assert result.exit_code != 0 and "100-point curves" in result.output and "Traceback" not in result.output
