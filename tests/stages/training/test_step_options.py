"""Step-side options of train-student (--amp bf16, --channels-last, --compile): each computes what
the plain float32 step computes, within a tolerance measured on the test student."""

import json

import pytest
import torch
from support.runs import build, train_config

from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.stages.train_student import run
from tiekd.stages.training.log import read_jsonl

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


def two_steps(cfg) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The losses of a whole two-step run (steps.jsonl) and the weights it ends with (last.pt)."""
    run(cfg)
    losses = [step["loss"] for step in read_jsonl(cfg.out / "steps.jsonl")]
    return losses, load_checkpoint(cfg.out / "last.pt")["model"]


def assert_near(run_a, run_b, *, rtol: float) -> str:
    """Two runs' losses and final weights equal within ``rtol``; returns the measured errors."""
    loss_error = max(abs(a - b) / abs(b) for a, b in zip(run_a[0], run_b[0]))
    weights = {k: v.double() for k, v in run_a[1].items() if v.is_floating_point()}
    weight_error = relative_error(weights, {k: run_b[1][k].double() for k in weights})
    measured = f"loss {loss_error:.1e}, weights {weight_error:.1e}"
    assert len(run_a[0]) == len(run_b[0]) == 2 and loss_error < rtol and weight_error < rtol, measured
    return measured


@pytest.fixture(scope="module")
def plain_run(sample, store, tmp_path_factory):
    return two_steps(train_config(sample, store, tmp_path_factory.mktemp("plain_run"), max_steps=2))


LAYOUT_RTOL = 1e-5
"""Another memory layout or compiled kernels sum in another order: float32 rounding. Measured over two
steps: channels-last loss 2.1e-7, weights 5.3e-7; compiled loss 0, weights 5.2e-7."""


def test_channels_last_gives_the_plain_gradients(sample, store, tmp_path, plain):
    cfg = train_config(sample, store, tmp_path, channels_last=True)
    convolutions = [p for p in build(cfg)[0].model.parameters() if p.dim() == 4 and min(p.shape[:2]) > 1]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    assert not convolutions[0].is_contiguous()
    loss, gradients = loss_and_gradients(cfg)
    assert abs(loss - plain[0]) / abs(plain[0]) < LAYOUT_RTOL
    assert relative_error(gradients, plain[1]) < LAYOUT_RTOL, relative_error(gradients, plain[1])


def test_channels_last_run_equals_the_plain_run(sample, store, tmp_path, plain_run):
    channels_last = two_steps(train_config(sample, store, tmp_path, max_steps=2, channels_last=True))
    assert json.loads((tmp_path / "run.json").read_text())["channels_last"] is True
    print(assert_near(channels_last, plain_run, rtol=LAYOUT_RTOL))


@pytest.mark.slow
def test_compiled_run_equals_the_plain_run(sample, store, tmp_path, plain_run):
    """torch.compile (TorchInductor's C++ kernels on the CPU): half a minute with inductor's cache
    warm, several minutes cold on a busy 2-core machine."""
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    compiled = two_steps(train_config(sample, store, tmp_path, max_steps=2, compile=True))
    assert counters["stats"]["unique_graphs"] > graphs, "torch.compile compiled nothing"
    print(assert_near(compiled, plain_run, rtol=LAYOUT_RTOL))
