"""Checks on the paths a user passes: a file where a file is expected, a folder that can be written.

Both run before any work, so a wrong path costs one line and no time: "does not exist" and "is a
directory" are told apart (a directory given as a file is a different mistake), and an output
folder is proven writable by creating a file in it (permission bits say nothing to root, and
nothing about a read-only mount).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from tiekd.pipeline.errors import OutputError, TiekdError


def require_file(path: str | Path, *, what: str, error: type[TiekdError], hint: str = "") -> Path:
    """``path`` as a Path if it is an existing file; else ``error`` naming ``what`` and the problem.

    ``hint`` (e.g. "; pass an existing file to --split") ends the message.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file{hint}")
    if not path.is_file():
        raise error(f"{what} {path} does not exist{hint}")
    return path


def os_reason(e: OSError) -> str:
    """The short reason of an OSError ("No space left on device"), without paths or errno codes."""
    return e.strerror or (os.strerror(e.errno) if e.errno else type(e).__name__)


def is_disk_full(e: BaseException) -> bool:
    """Whether an error means the disk (or the process's file-size limit) is full."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


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
