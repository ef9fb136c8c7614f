"""The shipped recipes: one per row of the authors' KITTI and NYU tables, each the authors' run (table below)."""

import configparser
import fnmatch
import re

import pytest
from support.paths import SETUP_CFG

from tiekd.cli import main
from tiekd.cli_options import option_sources
from tiekd.cli_train import train_student_config
from tiekd.pipeline.losses import RESPONSE_LOSSES
from tiekd.pipeline.methods import loss_scale
from tiekd.stages.recipes import RECIPES_DIR, list_recipes
from tiekd.stages.train_student import note_global_batch, run_sigma
from tiekd.stages.training.config import TrainStudentConfig, check_config

STUDENTS = ("mobilenetv2", "resnet18", "resnet50")
SIGMA = {"kitti": 0.8, "nyu": 0.15}
"""The sigma the authors' configs state (MobileNetV2, ResNet-18; NYU ResNet-50 too)."""

AUTHORS = {
    # (dataset, student, row): method, alpha, form, sigma in effect, loss scale, global batch 16 everywhere.
    # From the released configs (TIE-KD @ 989ec03 configs/students/, resolved with their _base_ files; study
    # in issue 17): TIE-KD_{adabins,bts,depthformer}[_r18|_r50][_L_DPM|_L_DEPTH]_{KITTI,NYU}.py,
    # Res-KD_*_{MSE,SI,SSIM,SSIM_SI,SSIM_MSE}_{KITTI,NYU}.py, baseline_{mobile2,r18,r50}_{KITTI,NYU}.py.
    # Full loss: sigma 0.5 whatever the config states (TIE_KD_loss passes none), x10; L_DPM only: the
    # config's sigma (0.8 / 0.15), mean KL, no x10; L_Depth only: 1 - SSIM, no x10; NYU SI: weight 1.5.
    **{(ds, st, "tiekd-code"): ("tiekd", 0.1, "code", 0.5, 10.0) for ds in ("kitti", "nyu") for st in STUDENTS},
    **{(ds, "mobilenetv2", "tiekd-dpm-only-code"): ("tiekd", 1.0, "code", s, 1.0) for ds, s in SIGMA.items()},
    **{(ds, "mobilenetv2", "tiekd-depth-only-code"): ("tiekd", 0.0, "code", None, 1.0) for ds in SIGMA},
    # Paper form: the configs' sigma (KITTI ResNet-50: 0.5), the paper's x10.
    **{(ds, st, "tiekd-paper"): ("tiekd", 0.1, "paper", SIGMA[ds], 10.0) for ds in SIGMA for st in STUDENTS},
    ("kitti", "resnet50", "tiekd-paper"): ("tiekd", 0.1, "paper", 0.5, 10.0),
    **{(ds, "mobilenetv2", "tiekd-dpm-only-paper"): ("tiekd", 1.0, "paper", s, 10.0) for ds, s in SIGMA.items()},
    **{(ds, "mobilenetv2", "tiekd-depth-only-paper"): ("tiekd", 0.0, "paper", None, 10.0) for ds in SIGMA},
    **{(ds, "mobilenetv2", m): (m, None, "code", None, 1.0) for ds in SIGMA for m in RESPONSE_LOSSES},
    ("nyu", "mobilenetv2", "res-si"): ("res-si", None, "code", None, 1.5),
    **{(ds, st, "supervised"): ("supervised", None, None, None, 1.0) for ds in SIGMA for st in STUDENTS},
}
SETTINGS = {"kitti": ((352, 704), 257, 80.0, 110), "nyu": ((416, 544), 49, 10.0, 0)}
"""Crop, bins, largest depth (m), first loss row of the authors' KITTI and NYU configs."""
WEIGHTS = {"mobilenetv2": "mobilenetv2_100.ra_in1k", "resnet18": "resnet18.tv_in1k", "resnet50": "resnet50.tv_in1k"}
"""Start weights: torchvision's v1 ResNets as the authors (torchvision://resnet18/50); timm has no
copy of mmcls://mobilenet_v2, ra_in1k is its closest."""
EXPECTED = {f"{ds}-{st}-{row}" for ds, st, row in AUTHORS}
AUTHORS_FIGURES = re.compile(r"(0\.0\d{3} / 2\.\d{4}|0\.[12]\d{3} / 0\.[456]\d{3})")
"""AbsRel / RMSE as the authors' README writes them (KITTI 0.05..0.09 / 2.1..2.9 m, NYU 0.14..0.25 / 0.47..0.63 m)."""


def resolve(name, tmp_path, *flags):
    """The TrainStudentConfig that ``tiekd train-student --config NAME`` + data flags resolves to."""
    command = main.commands["train-student"]
    args = ["--config", name, "--data-root", tmp_path, "--split", tmp_path / "s.txt", "--out", tmp_path / "r"]
    args += ["--cache", tmp_path / "c.zarr", "--gt-root", tmp_path, *flags]
    with command.make_context("train-student", [str(a) for a in args]) as ctx:
        cfg = train_student_config(**ctx.params)
        cfg.option_sources = option_sources(ctx) | cfg.option_sources
        return cfg


def test_every_row_of_the_table_has_a_recipe():
    assert {recipe.name for recipe in list_recipes()} == EXPECTED


@pytest.mark.parametrize("key", sorted(AUTHORS), ids="-".join)
def test_recipe_is_the_authors_run(key, tmp_path):
    dataset, student, row = key
    name = "-".join(key)
    cfg = resolve(name, tmp_path)
    check_config(cfg)
    method, alpha, form, sigma, scale = AUTHORS[key]
    assert (cfg.dataset, cfg.student, cfg.method) == (dataset, student, method)
    assert (cfg.epochs, cfg.batch_size, cfg.recipe_global_batch, cfg.lr) == (24, 8, 16, 1e-3)
    assert (cfg.crop, cfg.n_bins, cfg.max_depth, cfg.loss_top_row) == SETTINGS[dataset] and cfg.min_depth == 1e-3
    assert cfg.pretrained and cfg.weights == WEIGHTS[student]
    assert loss_scale(cfg.loss_scale, cfg.method, form=cfg.dpm_form, alpha=cfg.alpha)[0] == scale
    if method == "tiekd":
        assert (cfg.alpha, cfg.dpm_form) == (alpha, form)
        if sigma is not None:
            assert run_sigma(cfg)[0] == sigma
    elif method != "supervised":
        assert cfg.dpm_form == "code"  # the released abs() float32 SSIM
    if form == "code" or method.startswith("res-"):
        assert (cfg.colour_aug, cfg.rotate_teacher) == ("released", False)
    elif form == "paper":
        assert (cfg.colour_aug, cfg.rotate_teacher) == ("bts", True)


@pytest.mark.parametrize("recipe", list_recipes(), ids=lambda r: r.name)
def test_resnet_recipes_do_not_ask_for_sync_bn(recipe):
    """The authors' ResNet students use plain per-GPU BN; only MobileNetV2 uses SyncBN."""
    assert ("--sync-bn" in recipe.path.read_text()) == ("mobilenetv2" in recipe.name)


def test_another_dataset_than_the_recipes_is_refused(tmp_path, cli):
    result = cli("train-student", "--config", "kitti-mobilenetv2-tiekd-paper", "--dataset", "nyu", "--data-root", tmp_path,
                 "--split", tmp_path / "s.txt", "--out", tmp_path / "r", "--cache", tmp_path / "c")  # fmt: skip
    assert result.exit_code != 0 and "is a kitti configuration" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_option_sources(tmp_path):
    cfg = resolve("nyu-mobilenetv2-tiekd-paper", tmp_path, "--epochs", "2")
    sources = cfg.option_sources
    assert sources["epochs"] == "command line" and sources["n_bins"].startswith("--config ")
    assert sources["loss_top_row"] == "dataset nyu" and sources["amp"] == "default"


@pytest.mark.parametrize("recipe", list_recipes(), ids=lambda r: r.name)
def test_recipe_states_the_authors_figures(recipe):
    assert recipe.title and AUTHORS_FIGURES.search(recipe.authors), recipe.authors


def test_flags_win_over_the_recipe(tmp_path):
    cfg = resolve("kitti-mobilenetv2-tiekd-paper", tmp_path, "--alpha", "0.3", "--epochs", "2")
    assert (cfg.alpha, cfg.epochs, cfg.dpm_form) == (0.3, 2, "paper")


def test_recipes_command_lists_them(cli):
    result = cli("recipes")
    assert result.exit_code == 0
    for recipe in list_recipes():
        assert recipe.name in result.output and recipe.authors in result.output
    shown = cli("recipes", "kitti-resnet50-tiekd-code")
    assert shown.output == (RECIPES_DIR / "kitti-resnet50-tiekd-code.yaml").read_text()


def test_recipes_are_package_data():
    """setup.cfg ships recipes/*.yaml, so `tiekd recipes` works from a wheel too."""
    setup = configparser.ConfigParser()
    setup.read(SETUP_CFG)
    patterns = setup["options.package_data"]["tiekd"].split()
    for recipe in list_recipes():
        relative = recipe.path.relative_to(RECIPES_DIR.parent).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


@pytest.mark.parametrize("accumulate, noted", [(1, True), (2, False)])
def test_a_global_batch_other_than_the_recipes_is_noted(accumulate, noted, tmp_path, capsys):
    cfg = TrainStudentConfig(
        data_root=tmp_path, split=tmp_path, out=tmp_path, accumulate=accumulate, recipe_global_batch=16
    )
    note_global_batch(cfg, 8 * accumulate)
    err = capsys.readouterr().err
    assert (err.count("\n"), "global batch is 8" in err and "--accumulate 2" in err) == (int(noted), noted)
