"""What ``tiekd compare`` reads of one run directory (``train-student --out``).

run.json (the resolved options), epochs.jsonl (per-epoch loss and validation metrics),
steps.jsonl (per-step seconds), a checkpoint's architecture (the parameter count) and any
``evaluate --json`` file saved in the folder (the test metrics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tiekd.pipeline.errors import DataError
from tiekd.stages.demo_report import parameter_count
from tiekd.stages.training.log import read_jsonl

RUN_RECORD = "run.json"
"""The file that makes a folder a run directory."""

RANKING_METRIC = "rmse"
"""The validation metric whose lowest epoch is the run's best (the one best.pt keeps)."""


@dataclass
class RunRecord:
    """One run directory as ``compare`` sees it."""

    path: Path
    options: dict
    """run.json: the run's options and what it resolved (device, autocast, steps, ...)."""
    epochs: list[dict]
    """epochs.jsonl: ``step``, ``epoch``, ``loss`` and, with a validation split, ``val`` metrics."""
    tests: dict[str, dict]
    """Metrics of each ``evaluate --json`` file in the folder, by file stem."""
    parameters: int | None
    """Trainable parameters of the student (None before its first checkpoint)."""
    train_seconds: float
    """Sum of the steps' seconds (waiting for data included; validation and checkpoints not)."""

    @property
    def validated(self) -> list[dict]:
        """The epochs with validation metrics."""
        return [epoch for epoch in self.epochs if "val" in epoch]

    @property
    def best(self) -> dict | None:
        """The validated epoch of lowest RANKING_METRIC (the first of equals, as best.pt), or None."""
        return min(self.validated, key=lambda epoch: epoch["val"][RANKING_METRIC], default=None)

    @property
    def last(self) -> dict | None:
        """The last validated epoch, or None."""
        return self.validated[-1] if self.validated else None


def read_run(path: Path) -> RunRecord:
    """The run directory at ``path``; DataError in one line when it is none or its run.json is damaged."""
    path = Path(path)
    record = path / RUN_RECORD
    if not record.is_file():
        raise DataError(
            f"{path} is not a train-student run directory (no {RUN_RECORD}); pass the folders given to --out"
        )
    try:
        options = json.loads(record.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{record} is not valid JSON ({e}); the run directory is damaged") from e
    return RunRecord(
        path=path,
        options=options,
        epochs=_records(path / "epochs.jsonl"),
        tests=evaluations(path),
        parameters=_parameters(path),
        train_seconds=sum(step.get("step_seconds", 0.0) for step in _records(path / "steps.jsonl")),
    )


def _records(path: Path) -> list[dict]:
    """The records of a JSON-lines file; none when it is missing (a run killed before its first step)."""
    return read_jsonl(path) if path.is_file() else []


def _parameters(path: Path) -> int | None:
    """The student's parameter count, from the smaller checkpoint present (best.pt holds no optimizer)."""
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            return parameter_count(path / name)
    return None


def evaluations(path: Path) -> dict[str, dict]:
    """``evaluate --json`` outputs in the folder (JSON objects with ``metrics`` and ``protocol``), by stem."""
    found = {}
    for file in sorted(path.glob("*.json")):
        if file.name == RUN_RECORD:
            continue
        try:
            content = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # some other file the user keeps beside the run
        if isinstance(content, dict) and isinstance(content.get("metrics"), dict) and "protocol" in content:
            found[file.stem] = content["metrics"]
    return found
