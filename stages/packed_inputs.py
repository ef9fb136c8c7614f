"""Where a stage reads a split's images and GT: the files under --data-root / --gt-root, or the
split packed into a store (``tiekd cache pack``; :mod:`tiekd.data.packed`).

Without --data-root the split is read from ``--inputs STORE``, else from the ``--cache`` store,
group ``_inputs/<split>`` with ``<split>`` the --split-name or the split file's stem.
"""

from __future__ import annotations

from pathlib import Path

from tiekd.data.datasets import EvaluationSamples
from tiekd.data.description import DatasetDescription
from tiekd.data.packed import PackedSource, check_packed
from tiekd.data.records import Record
from tiekd.pipeline.errors import ConfigError
from tiekd.pipeline.store.formats import split_group_name


def packed_store(*, data_root: Path | None, inputs: str | None, cache: str | None) -> str | None:
    """The store to read the split from; None where --data-root says to read the files."""
    if data_root is not None:
        return None
    if inputs is None and cache is None:
        raise ConfigError(
            "pass --data-root (and --gt-root) to read the dataset's files, or --inputs STORE holding the split "
            "packed with `tiekd cache pack`"
        )
    return inputs or cache


def packed_source(store: str | None, split: Path, split_name: str | None, *, with_gt: bool) -> PackedSource | None:
    """The packed split of ``store`` (None: the files are read), unchecked (see :func:`checked_source`)."""
    if store is None:
        return None
    return PackedSource((store, split_name or split_group_name(split)), with_gt=with_gt)


def checked_source(
    store: str | None, split: Path, split_name: str | None, records: list[Record], *,
    dataset: DatasetDescription, with_gt: bool, what: str,
) -> PackedSource | None:  # fmt: skip
    """:func:`packed_source`, refused in one line where the store does not hold ``records`` packed."""
    source = packed_source(store, split, split_name, with_gt=with_gt)
    if source is not None:
        check_packed(*source.ref, records, dataset=dataset, with_gt=with_gt, what=what)
        source.require_unchanged()  # the split as checked: a run refuses it packed again later
    return source


def evaluation_samples(cfg, records: list[Record], dataset: DatasetDescription, *, what: str) -> EvaluationSamples:
    """The records' EvaluationSamples for a stage's ``cfg`` (data_root, gt_root, inputs, cache,
    split, split_name): from the files, or from the packed store without --data-root."""
    store = packed_store(data_root=cfg.data_root, inputs=cfg.inputs, cache=cfg.cache)
    if store is None:
        if cfg.gt_root is None:
            raise ConfigError("--data-root needs --gt-root (the GT scored); or leave both out to read a packed store")
        roots = dataset.check_root(cfg.data_root, flag="--data-root"), dataset.check_root(cfg.gt_root, flag="--gt-root")
        return EvaluationSamples(records, *roots, dataset=dataset)
    with_gt = [r for r in records if r.gt is not None]
    packed = checked_source(store, cfg.split, cfg.split_name, with_gt, dataset=dataset, with_gt=True, what=what)
    return EvaluationSamples(records, None, None, dataset=dataset, packed=packed)
