"""Checks on the paths a user passes (a file where a file is expected, a folder that can be
written) and the content hashes that identify files and weights.

Both run before any work, so a wrong path costs one line and no time: "does not exist" and "is a
directory" are told apart (a directory given as a file is a different mistake), and an output
folder is proven writable by creating a file in it (permission bits say nothing to root, and
nothing about a read-only mount).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from tiekd.pipeline.errors import OutputError, TiekdError


def require_file(path: str | Path, *, what: str, error: type[TiekdError], hint: str = "") -> Path:
    """``path`` as a Path if it is an existing file; else ``error`` naming ``what`` and the problem.

    ``hint`` (e.g. "; pass an existing file to --split") ends the message.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise error(f"{what} {path} is a directory, not a file{hint}")
        if not path.is_file():
            raise error(f"{what} {path} does not exist{hint}")
    except OSError as e:  # e.g. a name longer than the file system allows
        raise error(f"{what} {shown(path)} cannot be used ({os_reason(e)}){hint}") from None
    return path


SHOWN_PATH_CHARS = 120
"""Longest path quoted whole in a message; a longer one is cut in the middle."""


def shown(path: str | Path) -> str:
    """A path as a message quotes it: whole, or its start and end around "..." when very long."""
    text = str(path)
    if len(text) <= SHOWN_PATH_CHARS:
        return text
    half = SHOWN_PATH_CHARS // 2
    return f"{text[:half]}...{text[-half:]} ({len(text)} characters)"


def os_reason(e: OSError) -> str:
    """The short reason of an OSError ("No space left on device"), without paths or errno codes."""
    return e.strerror or (os.strerror(e.errno) if e.errno else type(e).__name__)


WRITE_FAULTS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}
"""Errors of a write the user fixes (disk full, read-only, no permission, quota), not bugs."""


def os_error_in(e: BaseException | None) -> OSError | None:
    """The OSError behind ``e``: itself, or the one a library met (torch and onnx hide it in
    a RuntimeError of their own)."""
    while e is not None:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None


def write_fault(e: BaseException, *, folder: str | Path | None = None) -> OutputError | None:
    """The one-line error for a write that failed for the user's disk or folder (full, read-only,
    no permission), or None when ``e`` is something else. Every command's last resort: the stages
    check their outputs before the work and write atomically, so what was there stays intact.
    ``folder``: where the command writes, named when the error does not name its file."""
    cause = os_error_in(e)
    if cause is None or cause.errno not in WRITE_FAULTS:
        return None
    where = f" {shown(cause.filename or folder)}" if cause.filename or folder else ""
    return OutputError(
        f"cannot write{where} ({os_reason(cause)}); free space or choose a writable folder, then run the command again"
    )


@contextlib.contextmanager
def writing_to(folder: str | Path):
    """Turn a write the disk refuses inside the block into one line naming ``folder`` where the
    error names no file (a full disk fails the write, not the open)."""
    try:
        yield
    except Exception as e:
        error = write_fault(e, folder=f"into {folder}")
        if error is None:
            raise
        raise error from e


def require_writable_folder(path: str | Path, *, flag: str) -> Path:
    """Create ``path`` (and parents) if needed and prove it writable with a temporary file.

    Raises OutputError naming ``flag`` when the folder cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OutputError(f"{flag} {path} cannot be written ({os_reason(e)}); choose a writable folder") from e
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names and bytes, in order): identifies its weights."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
