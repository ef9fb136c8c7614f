"""Step-side options of train-student (--amp bf16, --channels-last, --compile): each computes what
the plain float32 step computes, within a tolerance measured on the test student."""

import json

import pytest
import torch
from support.runs import build, train_config

from tiekd.stages.train_student import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def loss_and_gradients(cfg) -> tuple[float, dict[str, torch.Tensor]]:
    """The loss of the run's first batch and the gradient of every weight (one forward and backward)."""
    trainer, loader = build(cfg)
    batch = next(iter(loader))
    trainer.model.zero_grad()
    loss = trainer._micro_step(batch, 1.0, more_to_come=False)["loss"]
    return loss, {name: p.grad.double().clone() for name, p in trainer.model.named_parameters()}


def relative_error(a: dict, b: dict) -> float:
    """|a - b| / |b| over all gradients together (Frobenius norms)."""
    difference = sum(float((a[k] - b[k]).pow(2).sum()) for k in b) ** 0.5
    return difference / sum(float(b[k].pow(2).sum()) for k in b) ** 0.5


@pytest.fixture(scope="module")
def plain(sample, store, tmp_path_factory):
    return loss_and_gradients(train_config(sample, store, tmp_path_factory.mktemp("plain")))


BF16_LOSS_RTOL = 1e-4
"""bfloat16 keeps 8 significant bits (rounding up to 2^-9 = 0.2 % of a value); measured on the test
student's first batch: loss 1.5e-6 (the loss is float32, over means of many pixels), gradients 2.2e-2."""
BF16_GRAD_RTOL = 0.05


def test_bf16_autocast_runs_and_stays_near_float32(sample, store, tmp_path, plain):
    loss, gradients = loss_and_gradients(train_config(sample, store, tmp_path, amp="bf16"))
    loss_error, grad_error = abs(loss - plain[0]) / abs(plain[0]), relative_error(gradients, plain[1])
    measured = f"loss {loss_error:.2e}, gradients {grad_error:.2e}"
    assert loss_error > 0 and grad_error > 0, f"bf16 changed nothing: it did not run ({measured})"
    assert loss_error < BF16_LOSS_RTOL and grad_error < BF16_GRAD_RTOL, measured
    print(measured)


def test_run_json_records_bf16_on_the_cpu(sample, store, tmp_path):
    """bf16 runs on the CPU (torch's CPU autocast), so run.json says it ran; fp16 is CUDA only."""
    run(train_config(sample, store, tmp_path / "bf16", max_steps=1, amp="bf16"))
    assert json.loads((tmp_path / "bf16" / "run.json").read_text())["amp"] == "bf16"
    run(train_config(sample, store, tmp_path / "fp16", max_steps=1, amp="fp16"))
    assert json.loads((tmp_path / "fp16" / "run.json").read_text())["amp"] is None


@pytest.mark.parametrize(
    "args, config, expected",
    [([], "", None), (["--amp"], "", "fp16"), (["--amp", "bf16"], "", "bf16"), ([], "amp: true", "fp16"),
     ([], "amp: bf16", "bf16"), ([], "amp: false", None), (["--amp", "bf16"], "amp: true", "bf16")],
)  # fmt: skip
def test_amp_flag_and_config_files(args, config, expected, tmp_path):
    """--amp alone is fp16 as before bf16; a config file's amp: true (a run's config.yaml of then) too."""
    from tiekd import cli_train

    (tmp_path / "c.yaml").write_text(config + "\n")
    required = ["--data-root", "d", "--split", "s", "--out", "o", "--config", tmp_path / "c.yaml"]
    with cli_train.train_student.make_context("train-student", [*map(str, required), *args]) as context:
        assert cli_train.train_student_config(**context.params).amp == expected


def test_amp_refuses_other_values(cli):
    result = cli("train-student", "--data-root", "d", "--split", "s", "--out", "o", "--amp", "fp8")
    assert result.exit_code == 2 and "'fp8' is not one of 'fp16', 'bf16'" in result.output
