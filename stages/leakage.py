"""The leakage guard of both stages (:mod:`tiekd.data.leakage`): options to a checked record."""

from __future__ import annotations

from tiekd.data.leakage import EvaluationSplit
from tiekd.data.registry import get_dataset
from tiekd.pipeline.errors import ConfigError


def leakage_guard(cfg, frames: list, *, what: str) -> dict | None:
    """Check ``frames`` against ``cfg.test_split`` (refused unless ``cfg.allow_leakage``); returns the
    record of the check, None without --test-split."""
    if cfg.test_split is None:
        if cfg.allow_leakage:
            raise ConfigError("--allow-leakage needs --test-split, the evaluation split the guard compares with")
        return None
    root = cfg.test_data_root or cfg.data_root
    if root is None:
        raise ConfigError("--test-split needs --test-data-root, the folder its image paths are relative to")
    dataset = get_dataset(cfg.dataset)
    dataset.check_root(root, flag="--test-data-root")
    return EvaluationSplit.read(cfg.test_split, root, dataset).check(frames, allow=cfg.allow_leakage, what=what)
