"""Checkpoints: one dict per file, written atomically, loaded without unpickling code.

A checkpoint holds ``model``, ``optimizer``, ``scheduler``, ``scaler`` (state dicts), ``step``,
``epoch``, ``config`` (the run's resolved options), ``architecture`` (``build_student``'s
arguments) and ``normalisation`` (the input mean/std the model applies). It is written to a
temporary file beside the target and renamed, so a kill never leaves half a checkpoint.
A run's ``best.pt`` leaves out the optimizer, scheduler and scaler (only ``last.pt``, which
``--resume`` reads, needs them): every reader of a student needs the rest alone.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import torch

from tiekd.pipeline.dpm import MAX_N_BINS
from tiekd.pipeline.errors import CheckpointError, OutputError
from tiekd.pipeline.files import os_error_in, os_reason, require_file
from tiekd.pipeline.students import build_student

CHECKPOINT_FORMAT = 1
"""Version of the dict layout above."""


TEMPORARY_SUFFIX = ".tmp"
"""A checkpoint is written as ``.NAME.<random>.tmp`` beside its target before the rename."""


def save_checkpoint(path: str | Path, state: dict, *, then: str = "then --resume") -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename).

    A failed write (disk full, read-only folder) raises a one-line OutputError that ends with
    ``then`` (what to do next) and leaves an existing ``path`` as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    except OSError as e:
        raise _write_error(path, e, then) from e
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = os_error_in(e)
        if cause is None:
            raise
        raise _write_error(path, cause, then) from e


def _write_error(path: Path, e: OSError, then: str) -> OutputError:
    kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written"
    return OutputError(f"cannot write checkpoint {path} ({os_reason(e)}); {kept}; free space or fix the folder, {then}")


def remove_partial_checkpoints(folder: str | Path, name: str) -> list[Path]:
    """Delete the temporary files of ``name`` that a killed :func:`save_checkpoint` left in ``folder``."""
    partial = sorted(Path(folder).glob(f".{name}.*{TEMPORARY_SUFFIX}"))
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True``; CheckpointError if unusable."""
    path = require_file(path, what="checkpoint", error=CheckpointError)
    try:
        with warnings.catch_warnings():
            # A plain pickle of another protocol makes torch warn before it refuses the file.
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file that is not a torch checkpoint fails the unpickler in many ways (KeyError too)
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file ({_reason(e)}); use another one") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "architecture" not in state:
        raise CheckpointError(f"{path} is not a tiekd checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def _reason(e: BaseException) -> str:
    """One line of why torch refused a file: for weights-only refusals (a foreign pickle, a pickled
    object) the unpickler's own sentence, not torch's paragraph around it."""
    text = str(e)
    match = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|Check the documentation|$)", text, re.S)
    reason = match[1] if match else (text.strip().splitlines() or [type(e).__name__])[0]
    reason = reason.split(". ")[0]  # torch's advice after the first sentence is about torch.load, not tiekd
    return " ".join(f"{type(e).__name__}: {reason}".split())[:REASON_CHARS]


REASON_CHARS = 200
"""An error message quotes at most this much of torch's reason: one line on a terminal or a log."""


def student_from_checkpoint(state: dict, *, path: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the student a checkpoint describes and load its weights (strict)."""
    n_bins = state["architecture"].get("n_bins")
    if n_bins is not None and not (isinstance(n_bins, int) and 2 <= n_bins <= MAX_N_BINS):
        raise CheckpointError(
            f"{path} claims a head of {n_bins} depth bins, which tiekd never trains (2 to {MAX_N_BINS}): the "
            "checkpoint is damaged or not tiekd's; use another one"
        )
    try:
        model = build_student(**state["architecture"])
    except TypeError as e:
        raise CheckpointError(f"{path} describes an architecture this tiekd cannot build ({e})") from e
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"weights in {path} do not fit its architecture ({first})") from e
    return model
