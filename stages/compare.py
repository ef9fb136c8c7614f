"""``tiekd compare``: training runs side by side, as a paper's table and a figure of their curves.

Reads run directories (:mod:`tiekd.stages.comparing.runs`), groups the runs that differ only in
their seed and aggregates them as mean ± std (:mod:`tiekd.stages.comparing.table`), and draws the
validation curves of every run (:mod:`tiekd.pipeline.pictures.runs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tiekd.pipeline.errors import ConfigError
from tiekd.pipeline.pictures.figures import save_figure
from tiekd.pipeline.pictures.runs import validation_curves
from tiekd.stages.comparing.runs import read_run
from tiekd.stages.comparing.table import TABLE_METRICS, csv_text, group_runs, markdown, rows, summary


@dataclass
class CompareConfig:
    """Options of ``tiekd compare``."""

    runs: tuple[Path, ...] = field(default_factory=tuple)
    """Run directories (train-student --out), in the table's order."""
    json: bool = False
    """Print the table as JSON (every metric, mean, std and n of each group) instead of markdown."""
    csv: bool = False
    """Print the table as CSV (a mean and a std column per number) instead of markdown."""
    figure: Path | None = None
    """Write the runs' validation curves (AbsRel, RMSE, d1 against step; one colour per group) to this PNG."""


@dataclass
class Comparison:
    text: str
    """The table in the asked format."""
    figure: Path | None = None


def run(cfg: CompareConfig) -> Comparison:
    """Read the runs, tabulate them and draw the figure if asked."""
    if not cfg.runs:
        raise ConfigError("compare needs at least one run directory: tiekd compare RUN_DIR...")
    if cfg.json and cfg.csv:
        raise ConfigError("compare prints one table: pass --json or --csv, not both")
    runs = [read_run(path) for path in cfg.runs]
    keys, groups = group_runs(runs)
    summaries = [summary(group) for group in groups]
    if cfg.json:
        text = json.dumps({"differing_options": keys, "groups": summaries}, indent=2)
    elif cfg.csv:
        text = csv_text(keys, summaries).rstrip("\n")
    else:
        text = markdown(*rows(keys, summaries))
    figure = None
    if cfg.figure is not None:
        curves = _curves(groups, summaries)
        if not curves:
            raise ConfigError(f"--figure {cfg.figure}: none of the runs was validated (--val-split); nothing to draw")
        figure = save_figure(validation_curves(curves, TABLE_METRICS), cfg.figure)
    return Comparison(text=text, figure=figure)


def _curves(groups, summaries) -> list[dict]:
    """validation_curves's input: every validated run in its group's colour, the label on the group's first."""
    curves = []
    for colour, (group, s) in enumerate(zip(groups, summaries)):
        label = ", ".join(f"{key} {value}" for key, value in s["options"].items()) or group.runs[0].path.name
        for run in group.runs:
            if run.validated:
                metrics = {name: [epoch["val"][name] for epoch in run.validated] for name in TABLE_METRICS}
                steps = [epoch["step"] for epoch in run.validated]
                curves.append({"label": label, "colour": colour, "steps": steps, "metrics": metrics})
                label = None
    return curves


def report(result: Comparison) -> str:
    """The table (the figure's path goes to stderr, so the table can be piped)."""
    return result.text
