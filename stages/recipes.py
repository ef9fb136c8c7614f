"""``tiekd recipes``: the shipped configuration files, one per row of the authors' KITTI and NYU tables.

A recipe is a YAML file in ``recipes/`` (installed with the package) whose first comment line
names the row and whose second states the authors' AbsRel / RMSE (method.md section 9). Use one
with ``tiekd train-student --config NAME ...`` (or its path), adding data and output flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tiekd.pipeline.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
"""Where the recipes live: ``tiekd/recipes/*.yaml``."""

RECIPE_SUFFIX = ".yaml"


@dataclass(frozen=True)
class Recipe:
    name: str
    """File name without ``.yaml``, what ``--config`` takes."""
    title: str
    """The row of the paper's table (first comment line)."""
    authors: str
    """The authors' AbsRel / RMSE for that row (second comment line)."""
    path: Path


def _comment_lines(path: Path) -> list[str]:
    """The leading ``#`` lines of a file, without the ``#``."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def list_recipes() -> list[Recipe]:
    """Every shipped recipe, by name."""
    recipes = []
    for path in sorted(RECIPES_DIR.glob(f"*{RECIPE_SUFFIX}")):
        title, authors = (_comment_lines(path) + ["", ""])[:2]
        recipes.append(Recipe(name=path.stem, title=title, authors=authors, path=path))
    return recipes


def config_path(value: str) -> Path:
    """``--config`` value -> file: an existing path, or the name of a shipped recipe."""
    path = Path(value)
    if path.exists():
        return path
    recipe = RECIPES_DIR / f"{path.name.removesuffix(RECIPE_SUFFIX)}{RECIPE_SUFFIX}"
    if path.parent == Path(".") and recipe.exists():
        return recipe
    raise ConfigError(f"--config {value}: no such file or recipe; `tiekd recipes` lists the recipes")


def format_recipes(recipes: list[Recipe]) -> str:
    """One block per recipe: name, the row it reproduces, the authors' figures."""
    return "\n".join(f"{r.name}\n    {r.title}\n    {r.authors}" for r in recipes)
