"""Each flag's help and the docstring of the config field it fills say the same thing.

The help is the docstring's start (its first sentence or clause), without click's
"[default: ...]"; a config field that no flag fills says so in its docstring ("Not a flag").
"""

import ast
import inspect
import re

import click
import pytest
from click.testing import CliRunner

from tiekd.cli import main
from tiekd.stages.caching.config import CacheTeacherConfig
from tiekd.stages.compare import CompareConfig
from tiekd.stages.demo import DemoConfig
from tiekd.stages.evaluate import EvaluateConfig
from tiekd.stages.explain import ExplainConfig
from tiekd.stages.export import ExportConfig
from tiekd.stages.training.config import TrainStudentConfig

CONFIGS = {
    "cache-teacher": CacheTeacherConfig,
    "train-student": TrainStudentConfig,
    "evaluate": EvaluateConfig,
    "export": ExportConfig,
    "explain": ExplainConfig,
    "demo": DemoConfig,
    "compare": CompareConfig,
}
NOT_A_FLAG = "Not a flag"


def field_docstrings(cls) -> dict[str, str]:
    """{field: its docstring (the string literal under it), whitespace collapsed} of a dataclass."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for statement, following in zip(body, body[1:]):
        if isinstance(statement, ast.AnnAssign) and isinstance(following, ast.Expr):
            if isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def help_core(text: str) -> str:
    """An option's help without click's "[default: ...]" note, whitespace collapsed."""
    return " ".join(re.sub(r"\s*\[default:[^\]]*\]", "", text).split()).rstrip(".")


def fields(cls) -> set[str]:
    return set(inspect.signature(cls).parameters)


def options(command: str):
    return [p for p in main.commands[command].params if p.name != "config" and p.help is not None]


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_flag_help_starts_its_fields_docstring(command):
    docs = field_docstrings(CONFIGS[command])
    mismatched = {
        p.name: (help_core(p.help), docs.get(p.name))
        for p in options(command)
        if p.name in fields(CONFIGS[command]) and not docs.get(p.name, "").startswith(help_core(p.help))
    }
    assert not mismatched


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_field_has_a_flag_or_says_it_has_none(command):
    flags = {p.name for p in main.commands[command].params}
    fields = field_docstrings(CONFIGS[command])
    without = [name for name in inspect.signature(CONFIGS[command]).parameters if name not in flags]
    assert [name for name in without if NOT_A_FLAG not in fields.get(name, "")] == []


def test_every_flag_has_help():
    for name, command in main.commands.items():
        for param in getattr(command, "commands", {name: command}).values():
            for option in param.params:
                if isinstance(option, click.Option):
                    assert option.help, f"tiekd {name} {option.opts} has no help"


@pytest.mark.parametrize(
    "command, args, named",
    [
        ("cache-teacher", ("--teacher", "python:a:b", "--teacher", "python:c:d"), "--teacher is given 2 times"),
        ("evaluate", ("--cache", "a.zarr", "--cache=b.zarr"), "--cache is given 2 times"),
        ("explain", ("--checkpoint", "a.pt", "--checkpoint", "b.pt"), "--checkpoint is given 2 times"),
    ],
)
def test_a_model_or_store_named_twice_is_refused(command, args, named):
    """Two --teacher look like a mixture of teachers; click would keep the last silently."""
    result = CliRunner().invoke(main, [command, *args])
    assert result.exit_code == 2 and f"Error: {named}" in result.output and "Traceback" not in result.output


def test_other_options_given_twice_keep_the_last(tmp_path):
    """Scripts override a value by repeating its option: click's rule stays for those."""
    args = ["sample-data", str(tmp_path / "s"), "--train", "9", "--train", "1", "--test", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "wrote 1 train and 2 test frames" in result.output
