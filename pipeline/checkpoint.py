"""Checkpoints: one dict per file, written atomically, loaded without unpickling code.

A checkpoint holds ``model``, ``optimizer``, ``scheduler``, ``scaler`` (state dicts), ``step``,
``epoch``, ``config`` (the run's resolved options), ``architecture`` (``build_student``'s
arguments) and ``normalisation`` (the input mean/std the model applies). It is written to a
temporary file beside the target and renamed, so a kill never leaves half a checkpoint.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from tiekd.pipeline.errors import CheckpointError

CHECKPOINT_FORMAT = 1
"""Version of the dict layout above."""


TEMPORARY_SUFFIX = ".tmp"
"""A checkpoint is written as ``.NAME.<random>.tmp`` beside its target before the rename."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partial_checkpoints(folder: str | Path, name: str) -> list[Path]:
    """Delete the temporary files of ``name`` that a killed :func:`save_checkpoint` left in ``folder``."""
    partial = sorted(Path(folder).glob(f".{name}.*{TEMPORARY_SUFFIX}"))
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True``; CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file ({e}); use another one") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "architecture" not in state:
        raise CheckpointError(f"{path} is not a tiekd checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def student_from_checkpoint(state: dict, *, path: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the student a checkpoint describes and load its weights (strict)."""
    from tiekd.pipeline.students import build_student

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
