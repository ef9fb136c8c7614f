"""The run directory's records: resolved options, per-step and per-epoch metrics, and the same
(with validation pictures) as TensorBoard events (:mod:`tiekd.stages.training.board`)."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

from tiekd.pipeline.errors import ConfigError, OutputError
from tiekd.pipeline.files import os_reason
from tiekd.stages.training.board import RunBoard

RUN_LOCK = ".run.lock"
"""The file in a run directory that the running train-student holds locked (with its pid)."""


@contextmanager
def one_run(out: Path):
    """Hold the run directory ``out`` for this run: a second ``train-student`` into it stops in one
    line before it reads or writes anything there. The lock is the kernel's (``flock``), so it goes
    with the process that holds it, however that ends (kill -9 included): no stale lock remains."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RUN_LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise ConfigError(
                f"another train-student (pid {holder}) is running in {out}; wait for it to end or choose another --out"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        HELD_LOCKS.add(handle.fileno())
        try:
            yield
        finally:
            HELD_LOCKS.discard(handle.fileno())


HELD_LOCKS: set[int] = set()
"""File descriptors of the run locks this process holds (:func:`one_run`)."""


def forget_run_locks(_worker_id: int | None = None) -> None:
    """Close, in a forked DataLoader worker, its copies of the run locks: a flock lasts while any
    process holds the file open, so the workers left behind by a kill -9 of the run (they notice
    within seconds) would hold the run directory against the rerun."""
    for descriptor in HELD_LOCKS:
        os.close(descriptor)
    HELD_LOCKS.clear()

@contextmanager
def _writing(what: Path | str):
    """Turn a failed write of ``what`` (disk full, read-only) into one line that says how to go on."""
    try:
        yield
    except OSError as e:
        raise OutputError(
            f"cannot write {what} ({os_reason(e)}); the checkpoints are intact: free space, then --resume"
        ) from e


def _quiet_board_writer(args) -> None:
    """threading.excepthook: tensorboard's writer thread raises a failed write in its own thread (a
    traceback on stderr) and again in the training thread at the next event, where :func:`_writing`
    makes it one line; the thread's copy is not printed. Anything else goes to the previous hook."""
    if isinstance(args.exc_value, OSError) and isinstance(args.thread, _AsyncWriterThread):
        return
    _previous_excepthook(args)


_previous_excepthook = threading.excepthook


class RunLog:
    """Appends JSON lines to ``steps.jsonl`` and ``epochs.jsonl`` in a run directory.

    On resume, lines past the checkpoint's step are dropped first, so the logs read as one
    uninterrupted run.
    """

    def __init__(self, out: Path, *, resume_step: int | None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        threading.excepthook = _quiet_board_writer
        self.events = f"the TensorBoard events in {self.out}"
        with _writing(self.events):
            self.board = RunBoard(self.out, resume_step=resume_step)
        self.steps = self.out / "steps.jsonl"
        self.epochs = self.out / "epochs.jsonl"
        for path in (self.steps, self.epochs):
            if resume_step is None:
                with _writing(path):
                    path.write_text("")
            else:
                self._truncate(path, resume_step)

    @staticmethod
    def _truncate(path: Path, step: int) -> None:
        """Keep the records up to ``step``; rewritten beside and renamed, so a full disk loses nothing.
        A last line torn by a kill or a full disk is dropped (its step is past the checkpoint's)."""
        lines = path.read_text().splitlines() if path.exists() else []
        if lines and not _is_json(lines[-1]):
            lines.pop()
        kept = [line for line in lines if line and json.loads(line)["step"] <= step]
        partial = path.with_name(f".{path.name}.tmp")
        with _writing(path):
            partial.write_text("".join(line + "\n" for line in kept))
            os.replace(partial, path)

    def losses_after(self, step: int) -> list[float]:
        """Losses of the logged steps after ``step``: on resume, the current epoch's steps so far."""
        return [record["loss"] for record in read_jsonl(self.steps) if record["step"] > step]

    def write_config(self, config: dict) -> None:
        """run.json, and its options into TensorBoard's HPARAMS tab."""
        with _writing(self.out / "run.json"):
            (self.out / "run.json").write_text(json.dumps(config, indent=2) + "\n")
        with _writing(self.events):
            self.board.options(config)

    def step(self, record: dict) -> None:
        _append(self.steps, record)
        with _writing(self.events):
            self.board.step(record)

    def epoch(self, record: dict) -> None:
        _append(self.epochs, record)
        with _writing(self.events):
            self.board.epoch(record)

    def pictures(self, step: int, pictures: list) -> None:
        """Validation pictures, uint8 (H, W, 3) each, into TensorBoard."""
        with _writing(self.events):
            self.board.pictures(step, pictures)

    def close(self) -> None:
        """Flush and close the TensorBoard files (the JSON lines are written as they come)."""
        with _writing(self.events):
            self.board.close()


def _append(path: Path, record: dict) -> None:
    with _writing(path), path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def read_jsonl(path: Path) -> list[dict]:
    """All records of a JSON-lines file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
