"""Runs side by side: the options that differ, seeds aggregated as mean ± std, as one table.

A group is the runs whose options are equal but for the seed; each of its numbers is the mean
over the group's runs with the sample standard deviation (n - 1). The table is markdown (paper
ready), CSV or JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields

import numpy as np

from tiekd.stages.comparing.runs import RunRecord
from tiekd.stages.training.config import TrainStudentConfig

NOT_COMPARED = ("out", "resume", "option_sources", "cache_identity", "workers", "save_every")
"""run.json keys that never make runs differ: where the run went, how it was continued, where its
options came from (a record, not an option), the cache's identity (its path is an option) and
settings that leave every step unchanged."""

SEED = "seed"

OPTIONS = {f.name for f in fields(TrainStudentConfig)}
"""run.json keys that are train-student's options; the others are what the run resolved or measured."""

TABLE_METRICS = {"abs_rel": "AbsRel ↓", "rmse": "RMSE (m) ↓", "d1": "δ1 ↑"}
"""Metrics shown in the markdown and CSV tables, with their paper titles (JSON holds them all)."""


@dataclass
class Group:
    """Runs that differ only in their seed."""

    options: dict
    """The differing options' values (seed left out)."""
    runs: list[RunRecord]

    @property
    def seeds(self) -> list:
        return [run.options.get(SEED) for run in self.runs]


def differing_options(runs: list[RunRecord]) -> list[str]:
    """run.json keys whose values are not all equal (NOT_COMPARED aside), in run.json's order.

    Every differing option (a train-student flag) is kept; a differing value run.json resolved
    (the loss scale a method applies, the steps of an epoch count, the device ``auto`` chose) only
    where the options do not already tell those runs apart, so a table of methods is not repeated
    in the scales they imply.
    """
    keys = list(dict.fromkeys(key for run in runs for key in run.options))
    values = {key: {_value(run, key) for run in runs} for key in keys}
    differing = [key for key in keys if key not in NOT_COMPARED and len(values[key]) > 1]
    kept = [key for key in differing if key in OPTIONS]
    for key in differing:
        options = [k for k in kept if k != SEED and k in OPTIONS]
        if key not in OPTIONS and _distinct(runs, [*options, key]) > _distinct(runs, options):
            kept.append(key)
    return [key for key in differing if key in kept]


def _value(run: RunRecord, key: str) -> str:
    return json.dumps(run.options.get(key), sort_keys=True)


def _distinct(runs: list[RunRecord], keys: list[str]) -> int:
    """How many different combinations of ``keys``' values the runs have."""
    return len({tuple(_value(run, key) for key in keys) for run in runs})


def group_runs(runs: list[RunRecord]) -> tuple[list[str], list[Group]]:
    """(differing options but the seed, the groups in the order of their first run)."""
    keys = [key for key in differing_options(runs) if key != SEED]
    groups: dict[str, Group] = {}
    for run in runs:
        options = {key: run.options.get(key) for key in keys}
        groups.setdefault(json.dumps(options, sort_keys=True), Group(options, [])).runs.append(run)
    return keys, list(groups.values())


def mean_std(values: list[float]) -> dict:
    """{"mean", "std", "n"}: the sample standard deviation (n - 1), None for a single value."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def _metrics(records: list[dict | None]) -> dict[str, dict]:
    """mean_std of each metric over the runs' records (runs without one left out)."""
    present = [record for record in records if record]
    names = list(dict.fromkeys(name for record in present for name in record))
    return {name: mean_std([record.get(name) for record in present]) for name in names}


def summary(group: Group) -> dict:
    """A group's numbers: parameters, training seconds, best and last validation metrics, test metrics."""
    runs = group.runs
    tests = list(dict.fromkeys(stem for run in runs for stem in run.tests))
    return {
        "options": group.options,
        "runs": [str(run.path) for run in runs],
        "seeds": group.seeds,
        "parameters": runs[0].parameters,
        "train_seconds": mean_std([run.train_seconds for run in runs]),
        "best_epoch": mean_std([run.best and run.best["epoch"] for run in runs]),
        "best": _metrics([run.best and run.best["val"] for run in runs]),
        "last": _metrics([run.last and run.last["val"] for run in runs]),
        "test": {stem: _metrics([run.tests.get(stem) for run in runs]) for stem in tests},
    }


def columns(summaries: list[dict]) -> list[tuple[str, tuple]]:
    """(title, path into a summary) of the table's number columns, those some group has."""
    found = [("training s", ("train_seconds",))]
    for part, title in (("best", "best val"), ("last", "last val")):
        found += [(f"{title} {label}", (part, name)) for name, label in TABLE_METRICS.items()]
    stems = dict.fromkeys(stem for s in summaries for stem in s["test"])
    found += [(f"{stem} {label}", ("test", stem, name)) for stem in stems for name, label in TABLE_METRICS.items()]
    return [(title, path) for title, path in found if any(_at(s, path) for s in summaries)]


def _at(summary: dict, path: tuple) -> dict | None:
    """The mean_std at ``path`` in a summary, or None."""
    for key in path:
        summary = summary.get(key) if isinstance(summary, dict) else None
    return summary if summary and summary.get("n") else None


def _text(value: dict | None, digits: int = 3) -> str:
    """'mean ± std' of a mean_std ('mean' alone for one run, '-' for none)."""
    if value is None:
        return "-"
    if value["std"] is None or math.isnan(value["std"]):
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def _label(group: dict) -> str:
    """The runs of a group by folder name."""
    return ", ".join(path.rstrip("/").rsplit("/", 1)[-1] for path in group["runs"])


def _option_text(value) -> str:
    if isinstance(value, list):
        return "x".join(map(str, value))
    return "-" if value is None else str(value)


def rows(keys: list[str], summaries: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the table as text cells."""
    numbers = columns(summaries)
    header = ["runs", *keys, "seeds", "parameters (M)", *(title for title, _ in numbers)]
    body = []
    for s in summaries:
        parameters = "-" if s["parameters"] is None else f"{s['parameters'] / 1e6:.2f}"
        cells = [_label(s), *(_option_text(s["options"][key]) for key in keys), str(len(s["seeds"])), parameters]
        body.append(cells + [_text(_at(s, path), 1 if path == ("train_seconds",) else 3) for _, path in numbers])
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    """A GitHub/pandoc pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def csv_text(keys: list[str], summaries: list[dict]) -> str:
    """The table as CSV: one row per group, each number as a mean and a std column (std empty for one run)."""
    import csv
    import io

    numbers = columns(summaries)
    names = ["_".join(path) for _, path in numbers]
    header = ["runs", *keys, "seeds", "parameters"] + [f"{name}_{part}" for name in names for part in ("mean", "std")]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for s in summaries:
        values = [(_at(s, path) or {}) for _, path in numbers]
        row = [
            ";".join(s["runs"]),
            *(_option_text(s["options"][key]) for key in keys),
            len(s["seeds"]),
            s["parameters"],
        ]
        writer.writerow(row + [value.get(part) for value in values for part in ("mean", "std")])
    return out.getvalue()
