"""The datasets tiekd knows, by ``--dataset`` name (see :mod:`tiekd.data.description`)."""

from __future__ import annotations

from tiekd.data.description import DatasetDescription
from tiekd.data.kitti import KITTI
from tiekd.data.nyu import NYU
from tiekd.pipeline.errors import ConfigError

DATASETS: dict[str, DatasetDescription] = {"kitti": KITTI, "nyu": NYU}
"""--dataset name -> description; a new dataset is one more entry."""

DEFAULT_DATASET = "kitti"


def get_dataset(name: str) -> DatasetDescription:
    """The description of ``--dataset name``, or a ConfigError listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"--dataset {name!r} is not one of {', '.join(DATASETS)}") from None
