"""Configuration files for ``--config``: YAML (or JSON) mappings of option names to values.

A file names a command's options as its flags do, with dashes or underscores
(``batch-size: 8`` or ``batch_size: 8``); flags given on the command line win. ``--config`` also
takes the name of a shipped recipe (:mod:`tiekd.stages.recipes`). ``train-student`` writes
``config.yaml`` into its run directory (:func:`write_rerun_config`): passed back with ``--config``
it re-runs the same training.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

from tiekd.pipeline.errors import ConfigError

RERUN_CONFIG = "config.yaml"
"""The file in a run directory that re-runs the run with ``--config``."""

NOT_RERUN = ("resume", "option_sources")
"""Fields left out of RERUN_CONFIG: a re-run starts afresh unless --resume is given with it; where
the options came from is the run's record, not an option."""

YAML_BOOLEAN = r"^(?:true|True|TRUE|false|False|FALSE)$"
"""The booleans of YAML 1.2. YAML 1.1 (PyYAML's default) also reads yes, no, on and off as
booleans, which turns ``resume: yes`` or ``dpm-form: no``-like values into True/False; here they
stay text, as the flags spell them."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans (see YAML_BOOLEAN)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(YAML_BOOLEAN), list("tTfF"))


def option_key(name: str) -> str:
    """``"batch-size"`` or ``"--batch-size"`` -> ``"batch_size"``."""
    return name.lstrip("-").replace("-", "_")


def read_config(path: Path) -> dict:
    """The options of a configuration file, keys normalised to underscores; None values dropped.

    Raises ConfigError naming the file for a missing, unreadable or non-mapping file.
    """
    path = Path(path)
    if path.name == "run.json" and (path.parent / RERUN_CONFIG).exists():
        raise ConfigError(f"--config {path} is a run's record; pass {path.parent / RERUN_CONFIG}, its options")
    try:
        options = yaml.load(path.read_text(), Loader=_Loader)
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot be read ({error.strerror or error})") from error
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"--config {path} is not valid YAML{line}; fix the file") from error
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"--config {path} must be a mapping of option names to values, e.g. 'epochs: 24'")
    return {option_key(str(key)): value for key, value in options.items() if value is not None}


def rerun_options(cfg) -> dict:
    """A stage config dataclass as ``--config`` options: sizes as ``HxW``, paths as text, unset
    (None) options and NOT_RERUN left out."""
    options = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if value is None or field.name in NOT_RERUN:
            continue
        if isinstance(value, tuple) and len(value) == 2:
            value = f"{value[0]}x{value[1]}"
        options[field.name] = str(value) if isinstance(value, Path) else value
    return options


def write_rerun_config(out: Path, cfg) -> Path:
    """Write RERUN_CONFIG into the run directory ``out``; returns its path."""
    path = Path(out) / RERUN_CONFIG
    header = "# Options of this run: `tiekd train-student --config THIS_FILE` re-runs it (flags win).\n"
    path.write_text(header + yaml.safe_dump(rerun_options(cfg), sort_keys=False))
    return path
