"""``--config``: every command takes one, flags win, errors are one line, and a run's config.yaml
re-runs the same training."""

import json

import click
import pytest
import yaml
from support.commands import error_line, train_args

from tiekd.cli import main
from tiekd.stages.config_file import RERUN_CONFIG
from tiekd.stages.training.log import read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TIMING = ("step_seconds", "data_seconds")


def commands(group: click.Group, prefix=()):
    """(name path, command) of every command under ``group``."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


@pytest.mark.parametrize("path", [path for path, _ in commands(main)], ids=" ".join)
def test_every_command_takes_config(path):
    command = dict(commands(main))[path]
    assert "--config" in {opt for param in command.params for opt in param.opts}


def test_sample_data_options_and_argument_from_a_file(tmp_path, cli):
    config = tmp_path / "sample.yaml"
    config.write_text(yaml.safe_dump({"out": str(tmp_path / "d"), "train": 2, "test": 1, "seed": 3}))
    result = cli("sample-data", "--config", config, "--test", 2)
    assert result.exit_code == 0, result.output
    assert "wrote 2 train and 2 test frames" in result.output


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochs: 2\nno-such-option: 1\n", "'no_such_option' is not an option of `tiekd train-student`; fix the file"),
        ("epochs: 2\nbatch-sise: 4\n", "'batch_sise' is not an option of `tiekd train-student`; did you mean 'batch_size'?"),
        ("sync_bm: true\n", "did you mean 'sync_bn'?"),
        ("lr: [1, 2]\n", "lr: [1, 2] is not a single value; give one float"),
        ("epochs: many\n", "epochs: 'many' is not a valid integer range"),
        ("dpm-form: no\n", "dpm_form: 'no' is not one of 'paper', 'code'; fix the file"),
        ("epochs: [2\n", "is not valid YAML at line"),
        ("- 2\n", "must be a mapping of option names to values"),
    ],
)
def test_bad_files_are_one_line(tmp_path, cli, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert message in error_line(cli("train-student", "--config", config))


def test_yaml_1_1_words_stay_words(sample, store, tmp_path, cli):
    """``resume: yes`` means the flag's word, not YAML 1.1's True (which --resume would refuse)."""
    config = tmp_path / "resume.yaml"
    config.write_text("resume: yes\npretrained: no\n")
    line = error_line(cli(*train_args(sample, store, tmp_path / "run"), "--config", config))
    assert "holds no last.pt to continue from" in line


def test_a_missing_file_or_recipe_is_one_line(tmp_path, cli):
    line = error_line(cli("train-student", "--config", tmp_path / "nothing.yaml"))
    assert "no such file or recipe; `tiekd recipes` lists the recipes" in line


def test_config_yaml_reruns_the_same_training(sample, store, tmp_path, cli):
    first, second = tmp_path / "first", tmp_path / "second"
    result = cli(*train_args(sample, store, first, "--epochs", 1, "--dpm-form", "code", "--alpha", 0.3))
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((first / RERUN_CONFIG).read_text())
    assert written["alpha"] == 0.3 and written["crop"] == "352x704" and "resume" not in written
    result = cli("train-student", "--config", first / RERUN_CONFIG, "--out", second)
    assert result.exit_code == 0, result.output
    steps = [[{k: v for k, v in s.items() if k not in TIMING} for s in read_jsonl(run / "steps.jsonl")] for run in (first, second)]
    assert steps[0] == steps[1] and len(steps[0]) == 4
    records = [json.loads((run / "run.json").read_text()) for run in (first, second)]
    assert records[0].pop("out") != records[1].pop("out")
    # Where the options came from differs (flags, then the config.yaml); everything else is equal.
    sources = [r.pop("option_sources") for r in records]
    assert sources[0]["alpha"] == "command line" and sources[1]["alpha"].startswith("--config ")
    assert records[0] == records[1]
    assert records[0]["dpm_sigma"] == 0.5


def test_run_json_points_to_config_yaml(sample, store, tmp_path, cli):
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / RERUN_CONFIG).write_text("epochs: 1\n")
    line = error_line(cli("train-student", "--config", tmp_path / "run.json"))
    assert f"pass {tmp_path / RERUN_CONFIG}" in line
