"""User-facing errors.

Every error a user can cause is a :class:`TiekdError`: one sentence that names the flag or file
and says what to do. The CLI prints it as a single line and exits with status 1; lower errors are
chained with ``from e`` so ``--verbose`` can still show where they came from.
"""

import click


class TiekdError(click.ClickException):
    """A problem with the user's input, files or environment (exit status 1, no traceback)."""


class DataError(TiekdError):
    """A split file, data root, image or ground-truth file is missing or malformed."""


class StoreError(TiekdError):
    """A teacher cache is missing, incomplete, incompatible or not writable."""


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
