"""``tiekd compare`` on real run directories (tiny runs of the test student): the table's numbers
against the same numbers computed here from the runs' files, in markdown, CSV and JSON; the figure;
the refusals."""

import csv
import io
import json
import statistics

import numpy as np
import pytest
from PIL import Image
from support.commands import error_line

from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.stages.training.log import read_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHOWN = ("abs_rel", "rmse", "d1")
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def best_and_last(run) -> tuple[dict, dict]:
    """The validation metrics of the lowest-RMSE epoch and of the last epoch, from epochs.jsonl."""
    epochs = read_jsonl(run / "epochs.jsonl")
    best = epochs[0]
    for epoch in epochs[1:]:
        if epoch["val"]["rmse"] < best["val"]["rmse"]:
            best = epoch
    return best["val"], epochs[-1]["val"]


def text(values: list[float], digits: int = 3) -> str:
    """How the table writes the values of a group: mean ± sample std, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def parameters(run) -> int:
    """Weights in best.pt that are not BatchNorm statistics."""
    model = load_checkpoint(run / "best.pt")["model"]
    return sum(value.numel() for key, value in model.items() if not key.endswith(BUFFERS))


def seconds(run) -> float:
    return sum(step["step_seconds"] for step in read_jsonl(run / "steps.jsonl"))


def markdown_rows(output: str) -> list[dict]:
    lines = [line for line in output.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.fixture(scope="module")
def groups(compared_runs):
    """The expected groups: the two seeds of lr 1e-3, and lr 2e-3 alone."""
    return {"0.001": compared_runs[:2], "0.002": compared_runs[2:]}


def test_markdown_table(compared_runs, groups, cli):
    result = cli("compare", *compared_runs)
    assert result.exit_code == 0, result.output
    rows = markdown_rows(result.output)
    assert [row["lr"] for row in rows] == list(groups) and list(rows[0])[:3] == ["runs", "lr", "seeds"]
    for row, runs in zip(rows, groups.values()):
        assert row["runs"] == ", ".join(run.name for run in runs) and row["seeds"] == str(len(runs))
        assert row["parameters (M)"] == f"{parameters(runs[0]) / 1e6:.2f}"
        assert row["training s"] == text([seconds(run) for run in runs], 1)
        for part, index in (("best val", 0), ("last val", 1)):
            for name, title in zip(SHOWN, ("AbsRel ↓", "RMSE (m) ↓", "δ1 ↑")):
                assert row[f"{part} {title}"] == text([best_and_last(run)[index][name] for run in runs])
    tests = [json.loads((run / "test.json").read_text())["metrics"]["rmse"] for run in groups["0.001"]]
    assert rows[0]["test RMSE (m) ↓"] == text(tests) and rows[1]["test RMSE (m) ↓"] == "-"


def test_json_holds_every_metric_with_mean_std_and_n(compared_runs, groups, cli):
    result = cli("compare", *compared_runs, "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    assert table["differing_options"] == ["lr"]
    first = table["groups"][0]
    assert first["options"] == {"lr": 0.001} and first["seeds"] == [0, 1]
    assert first["runs"] == [str(run) for run in groups["0.001"]] and first["parameters"] == parameters(
        compared_runs[0]
    )
    for name in best_and_last(compared_runs[0])[0]:
        values = [best_and_last(run)[0][name] for run in groups["0.001"]]
        got = first["best"][name]
        np.testing.assert_allclose([got["mean"], got["std"]], [statistics.mean(values), statistics.stdev(values)])
        assert got["n"] == 2
    alone = table["groups"][1]
    assert alone["best"]["rmse"] == {"mean": best_and_last(compared_runs[2])[0]["rmse"], "std": None, "n": 1}
    assert alone["test"] == {} and set(first["test"]) == {"test"}


def test_csv_has_a_mean_and_a_std_column_per_number(compared_runs, groups, cli):
    result = cli("compare", *compared_runs, "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [row["lr"] for row in rows] == list(groups)
    values = [best_and_last(run)[1]["d1"] for run in groups["0.001"]]
    assert float(rows[0]["last_d1_mean"]) == pytest.approx(statistics.mean(values))
    assert float(rows[0]["last_d1_std"]) == pytest.approx(statistics.stdev(values))
    assert rows[1]["last_d1_std"] == "" and rows[1]["test_test_rmse_mean"] == ""


def test_figure_draws_every_group(compared_runs, cli, tmp_path):
    figure = tmp_path / "curves.png"
    result = cli("compare", *compared_runs, "--figure", figure)
    assert result.exit_code == 0, result.output
    pixels = np.asarray(Image.open(figure).convert("RGB")).reshape(-1, 3)
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # matplotlib's C0 and C1: the two groups
        assert (np.abs(pixels.astype(int) - colour).sum(axis=1) < 8).sum() > 100, colour


def test_one_run_alone(compared_runs, cli):
    rows = markdown_rows(cli("compare", compared_runs[2]).output)
    assert len(rows) == 1 and "lr" not in rows[0] and rows[0]["seeds"] == "1"
    assert rows[0]["best val RMSE (m) ↓"] == text([best_and_last(compared_runs[2])[0]["rmse"]])


def test_refusals(compared_runs, cli, tmp_path):
    assert "not a train-student run directory" in error_line(cli("compare", compared_runs[0], tmp_path))
    assert "not both" in error_line(cli("compare", compared_runs[0], "--json", "--csv"))


def test_resolved_values_show_only_where_the_options_do_not_tell_runs_apart(tmp_path):
    """A method's loss scale follows from it (not shown); steps of equal options that differ are shown."""
    from tiekd.stages.comparing.runs import RunRecord
    from tiekd.stages.comparing.table import differing_options

    def record(**options):
        return RunRecord(path=tmp_path, options=options, epochs=[], tests={}, parameters=None, train_seconds=0.0)

    runs = [
        record(method="tiekd", seed=0, loss_scale_applied=10.0, total_steps=8, out="a"),
        record(method="supervised", seed=0, loss_scale_applied=1.0, total_steps=8, out="b"),
        record(method="tiekd", seed=1, loss_scale_applied=10.0, total_steps=8, out="c"),
    ]
    assert differing_options(runs) == ["method", "seed"]
    runs.append(record(method="tiekd", seed=2, loss_scale_applied=10.0, total_steps=6, out="d"))
    assert differing_options(runs) == ["method", "seed", "total_steps"]


def test_a_run_without_validation(sample, store, compared_runs, cli, tmp_path):
    """No --val-split: its validation cells are '-', and a figure of it alone is refused in one line."""
    from support.runs import train_config

    from tiekd.stages.train_student import run

    run(train_config(sample, store, tmp_path / "unvalidated", max_steps=1))
    rows = markdown_rows(cli("compare", compared_runs[2], tmp_path / "unvalidated").output)
    assert rows[0]["best val RMSE (m) ↓"] != "-" and rows[1]["best val RMSE (m) ↓"] == "-"
    assert rows[1]["parameters (M)"] == rows[0]["parameters (M)"]
    refused = cli("compare", tmp_path / "unvalidated", "--figure", tmp_path / "f.png")
    assert "none of the runs was validated" in error_line(refused) and not (tmp_path / "f.png").exists()
