"""The run directory's records: resolved options, per-step and per-epoch metrics, and the same
(with validation pictures) as TensorBoard events (:mod:`tiekd.stages.train_board`)."""

from __future__ import annotations

import json
from pathlib import Path

from tiekd.stages.train_board import RunBoard


class RunLog:
    """Appends JSON lines to ``steps.jsonl`` and ``epochs.jsonl`` in a run directory.

    On resume, lines past the checkpoint's step are dropped first, so the logs read as one
    uninterrupted run.
    """

    def __init__(self, out: Path, *, resume_step: int | None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.board = RunBoard(self.out, resume_step=resume_step)
        self.steps = self.out / "steps.jsonl"
        self.epochs = self.out / "epochs.jsonl"
        for path in (self.steps, self.epochs):
            if resume_step is None:
                path.write_text("")
            else:
                self._truncate(path, resume_step)

    @staticmethod
    def _truncate(path: Path, step: int) -> None:
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def losses_after(self, step: int) -> list[float]:
        """Losses of the logged steps after ``step``: on resume, the current epoch's steps so far."""
        return [record["loss"] for record in read_jsonl(self.steps) if record["step"] > step]

    def write_config(self, config: dict) -> None:
        (self.out / "run.json").write_text(json.dumps(config, indent=2) + "\n")

    def step(self, record: dict) -> None:
        with self.steps.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.board.step(record)

    def epoch(self, record: dict) -> None:
        with self.epochs.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.board.epoch(record)

    def pictures(self, step: int, pictures: list) -> None:
        """Validation pictures, uint8 (H, W, 3) each, into TensorBoard."""
        self.board.pictures(step, pictures)

    def close(self) -> None:
        """Flush and close the TensorBoard files (the JSON lines are written as they come)."""
        self.board.close()


def read_jsonl(path: Path) -> list[dict]:
    """All records of a JSON-lines file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
