"""The datasets tiekd knows, by ``--dataset`` name (see :mod:`tiekd.data.description`), and a
lab's own, by the path of its description file (``--dataset PATH.yaml``, :mod:`tiekd.data.own`)."""

from __future__ import annotations

from tiekd.data.description import DatasetDescription
from tiekd.data.kitti import KITTI
from tiekd.data.nyu import NYU
from tiekd.data.own import is_description_file, read_description
from tiekd.pipeline.errors import ConfigError

DATASETS: dict[str, DatasetDescription] = {"kitti": KITTI, "nyu": NYU}
"""--dataset name -> description; a new built-in dataset is one more entry."""

DEFAULT_DATASET = "kitti"


def get_dataset(name: str) -> DatasetDescription:
    """The description of ``--dataset name`` or of a description file, or a ConfigError listing the known ones."""
    if is_description_file(name):
        return read_description(name)
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"--dataset {name!r} is not one of {', '.join(DATASETS)}, nor a description file PATH.yaml"
        ) from None
