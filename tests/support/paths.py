"""Where the repository and the standard split files lie, seen from the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
"""The checkout: the folder that is the ``tiekd`` package, with setup.cfg."""
SETUP_CFG = REPOSITORY / "setup.cfg"
SHARED_SPLITS = REPOSITORY.parent / "shared" / "splits"
"""The standard KITTI Eigen and NYU split files, beside the checkout (not shipped with tiekd)."""


def shared_split(name: str) -> Path:
    """A standard split file from ``../shared/splits``. A clone without that folder skips the
    test with the reason; CI (``CI=true``), which always has it, fails instead."""
    path = SHARED_SPLITS / name
    if not path.is_file():
        reason = f"{path} is missing: the standard split files lie in ../shared/splits beside the checkout"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path
