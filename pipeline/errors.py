"""User-facing errors.

Every error a user can cause is a :class:`TiekdError`: one sentence that names the flag or file
and says what to do. The CLI prints it as a single line and exits with status 1; lower errors are
chained with ``from e`` so ``--verbose`` can still show where they came from.
"""

import re
from collections.abc import Collection

import click


class TiekdError(click.ClickException):
    """A problem with the user's input, files or environment (exit status 1, no traceback)."""


class DataError(TiekdError):
    """A split file, data root, image or ground-truth file is missing or malformed."""


class StoreError(TiekdError):
    """A teacher cache is missing, incomplete, incompatible or not writable."""


class StoreUnreachable(StoreError):
    """A store could not be read for a reason outside it (its server or the network went away, the
    local shard cache cannot be written): nothing is known to be damaged."""


class TeacherError(TiekdError):
    """A teacher spec is unknown, cannot be loaded, or produced unusable output."""


class CheckpointError(TiekdError):
    """A checkpoint is missing, corrupt, or of another architecture."""


class ConfigError(TiekdError):
    """Options that contradict each other or the data."""


class TrainingError(TiekdError):
    """Training cannot continue (for instance a non-finite loss)."""


class OutputError(TiekdError):
    """An output folder or file cannot be written (read-only, no permission, disk full)."""


class ExportError(TiekdError):
    """An exported student does not reproduce its checkpoint, or cannot be exported."""


class OutOfMemory(TiekdError):
    """An allocation failed: the sizes asked for do not fit the device's memory."""


GIB = 1 << 30


SIZE_OPTIONS = ("--batch-size", "--crop", "--scale", "--input", "--teacher-input", "--n-bins", "--workers")
"""Options that set how much memory a command asks for at once, in the order advice names them."""


def out_of_memory(e: BaseException, *, options: Collection[str] = SIZE_OPTIONS) -> OutOfMemory | None:
    """The one-line error for a failed allocation (numpy's MemoryError, torch's CPU allocator or CUDA
    out-of-memory error), or None when ``e`` is something else. The advice names those of the
    command's ``options`` that set sizes; a command with none is told the sizes it was given."""
    text = str(e)
    if not (isinstance(e, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()):
        return None
    asked = re.search(r"allocate (\d+) bytes", text)
    size = f"{int(asked[1]) / GIB:.1f} GiB" if asked else (re.search(r"(?i)allocate ([\d.]+ \w+)", text) or [None, ""])[1]
    sizes = [option for option in SIZE_OPTIONS if option in options]
    lower = f"lower {', '.join(sizes)}" if sizes else "check the sizes in its input files"
    return OutOfMemory(
        f"out of memory{f' ({size} asked for at once)' if size else ''}: {lower}, or use a device with more memory"
    )
