"""Real file-system faults for tests: a full disk and a read-only folder.

A tmpfs of a few megabytes fills up for real (ENOSPC) and a tmpfs mounted read-only refuses every
write (EROFS), even to root, whom permission bits do not stop. Mounting needs root (or
CAP_SYS_ADMIN); where it is refused the test is skipped with the reason, and a read-only folder
falls back to permission bits when the tests do not run as root.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, *, size_bytes: int | None = None, read_only: bool = False):
    """Mount a fresh tmpfs at ``path`` for the block; skip the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    options = ",".join(["ro"] * read_only + [f"size={size_bytes}"] * (size_bytes is not None)) or "defaults"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); run as root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextmanager
def read_only_folder(path: Path):
    """A folder no write reaches, as root (read-only mount) or not (mode 0555), for the block."""
    if os.geteuid() != 0:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with tmpfs(path, read_only=True):
        yield path


def assert_unwritable(path: Path) -> None:
    """The fault is real: creating a file in ``path`` fails."""
    with pytest.raises(OSError):
        (path / "probe").write_bytes(b"x")
