"""The shipped recipes: one per row of the paper's KITTI table, each a valid train-student config."""

import configparser
import fnmatch
import re

import pytest
import yaml
from support.paths import SETUP_CFG

from tiekd.cli import main, train_student_config
from tiekd.stages.recipes import RECIPES_DIR, list_recipes
from tiekd.stages.training.config import check_config

# Every row of method.md section 9 (MobileNetV2) and the ResNet rows, TIE-KD in both DPM forms.
EXPECTED = {
    *(f"kitti-mobilenetv2-tiekd{part}-{form}" for part in ("", "-dpm-only", "-depth-only") for form in ("paper", "code")),
    *(f"kitti-mobilenetv2-{method}" for method in ("res-ssim", "res-ssim-si", "res-mse", "supervised")),
    *(f"kitti-{student}-tiekd-{form}" for student in ("resnet18", "resnet50") for form in ("paper", "code")),
    "kitti-resnet18-supervised",
    "kitti-resnet50-supervised",
}
AUTHORS_FIGURES = re.compile(r"0\.0\d{3} / 2\.\d{4}")
"""AbsRel / RMSE as the paper writes them (all KITTI rows are 0.05..0.08 / 2.1..2.8 m)."""
ALPHA = {"": 0.1, "-dpm-only": 1.0, "-depth-only": 0.0}
"""L_DPM only is alpha = 1 (no depth term), L_Depth only is alpha = 0."""


def resolve(name, tmp_path, *flags):
    """The TrainStudentConfig that ``tiekd train-student --config NAME`` + data flags resolves to."""
    command = main.commands["train-student"]
    args = ["--config", name, "--data-root", tmp_path, "--split", tmp_path / "s.txt", "--out", tmp_path / "r"]
    args += ["--cache", tmp_path / "c.zarr", "--gt-root", tmp_path, *flags]
    with command.make_context("train-student", [str(a) for a in args]) as ctx:
        return train_student_config(**ctx.params)


def test_every_row_of_the_table_has_a_recipe():
    assert {recipe.name for recipe in list_recipes()} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_resolves_to_a_valid_configuration(name, tmp_path):
    cfg = resolve(name, tmp_path)
    check_config(cfg)
    written = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
    assert cfg.student == written["student"] == name.split("-")[1]
    assert cfg.method == written["method"] and (cfg.epochs, cfg.batch_size, cfg.crop) == (24, 8, (352, 704))
    if cfg.method == "tiekd":
        part = re.search(r"tiekd(-dpm-only|-depth-only)?-", name).group(1) or ""
        form = name.rsplit("-", 1)[1]
        assert (cfg.alpha, cfg.dpm_form, cfg.sigma) == (ALPHA[part], form, {"paper": 0.8, "code": 0.5}[form])


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
