"""Every CUDA path of tiekd against its CPU result, in a few minutes: run it wherever a GPU is.

    python bench/gpu_check.py

Each row runs one path on the CPU (the reference) and, with a CUDA device, on the GPU, and prints the
relative difference (Frobenius norms over every value) against its tolerance:

* ``step float32 / fp16 / bf16``: one TIE-KD forward and backward of the test student (timm's
  ``test_resnet``, the 257-bin DPM head) on a fixed random batch, under autocast with train-student's
  --amp dtypes (fp16 with a GradScaler); loss and gradients against the CPU's float32. float32 on
  CUDA uses TF32 convolutions by default, hence its tolerance;
* ``DDP world size 1``: tiekd's own process-group path (``join``, ``replicate`` with --sync-bn) with
  one process, NCCL on CUDA (gloo on the CPU): gradients equal to the same step without DDP;
* ``SyncBatchNorm kernels``: torch's CUDA SyncBatchNorm function (statistics, all-gather, elementwise)
  called directly, as DDP runs it on several GPUs (at world size 1 the module itself falls back to
  BatchNorm), output and input gradient against the CPU's batch norm;
* ``hf: teacher on the device``: a tiny random GLPN saved with transformers, loaded as ``hf:FOLDER``
  and run through tiekd's pre-processing on the device; depth against the CPU's;
* ``onnxruntime CUDA provider``: the exported test student run by the CUDA provider (when installed);
* ``data path, pinned``: train-student's DataLoader on the device (pinned batches) against the CPU's.

Without CUDA it runs the CPU half, says so and exits 0; with CUDA it exits 1 if a row fails.
This is a script, not a test; it takes under a minute on the CPU, under 5 minutes with a GPU.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

from tiekd.pipeline.dpm import bin_edges
from tiekd.pipeline.methods import Objective
from tiekd.pipeline.students import build_student

BATCH, SIZE, N_BINS = 2, (64, 128), 257
MIN_DEPTH, MAX_DEPTH, SIGMA = 1e-3, 80.0, 0.8
TOLERANCE = {"float32": 1e-2, "fp16": 2e-2, "bf16": 1e-1, "exact": 1e-5, "kernels": 1e-4, "teacher": 1e-3}
"""Relative differences accepted: TF32 (10-bit mantissa) for float32 on CUDA, fp16 (10 bits) and bf16 (7 bits)
under autocast (the CPU's bf16 step measured 2.2e-2 on the gradients), float32 reordering elsewhere."""


def relative(a, b) -> float:
    """|a - b| / |b| over every value of two tensors or lists of tensors (float64, on the CPU)."""
    pairs = list(zip(a, b)) if isinstance(a, (list, tuple)) else [(a, b)]
    difference = sum(float((x.double().cpu() - y.double().cpu()).pow(2).sum()) for x, y in pairs)
    return (difference / max(sum(float(y.double().cpu().pow(2).sum()) for _, y in pairs), 1e-30)) ** 0.5


def tiekd_batch() -> dict:
    """A fixed random batch: images in [0, 1] and teacher depth in metres."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(BATCH, 3, *SIZE, generator=generator)
    teacher = MIN_DEPTH + 5 + 60 * torch.rand(BATCH, 1, *SIZE, generator=generator)
    return {"image": image, "teacher": teacher}


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student("test_resnet", head="dpm", n_bins=N_BINS, min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)


def step(model, device: str, dtype: torch.dtype | None, replica=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and gradients of one TIE-KD step on ``device`` under autocast ``dtype`` (None: float32)."""
    edges = bin_edges(MIN_DEPTH, MAX_DEPTH, N_BINS).to(device)
    objective = Objective(method="tiekd", edges=edges, alpha=0.1, sigma=SIGMA, dpm_form="paper", scale=None, top_row=0)
    batch = {key: value.to(device) for key, value in tiekd_batch().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
    optimizer.zero_grad()
    with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
        output = (model if replica is None else replica)(batch["image"])
    loss, _ = objective.loss(output.float(), batch)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    return loss.detach(), [p.grad.detach().clone() for p in model.parameters()]


def check_steps(cuda: bool) -> list[tuple]:
    """float32, fp16 and bf16 steps against the CPU's float32 step."""
    reference = step(student(), "cpu", None)
    rows = []
    cpu_bf16 = step(student(), "cpu", torch.bfloat16)
    rows.append(("step bf16 (CPU)", relative(cpu_bf16[1], reference[1]), TOLERANCE["bf16"]))
    for name, dtype in (("float32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if not cuda:
            rows.append((f"step {name} (CUDA)", None, TOLERANCE[name]))
            continue
        loss, gradients = step(student().cuda(), "cuda", dtype)
        rows.append((f"step {name} (CUDA) loss", relative(loss, reference[0]), TOLERANCE[name]))
        rows.append((f"step {name} (CUDA) gradients", relative(gradients, reference[1]), TOLERANCE[name]))
    return rows


def check_process_group(cuda: bool) -> list[tuple]:
    """tiekd's DDP path with one process (gloo on the CPU, NCCL on CUDA) equals the step without it;
    with CUDA, torch's SyncBatchNorm kernels against the CPU's batch norm."""
    from tiekd.stages.training.distributed import join, leave, processes_from_env, replicate

    rows = []
    for device_type in ("cpu", "cuda") if cuda else ("cpu",):
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port())
        try:
            device = join(processes_from_env(), torch.device(device_type))
            plain = step(student().to(device), device_type, None)
            model = student().to(device)
            replica = replicate(model, device, sync_bn=True)
            distributed = step(model, device_type, None, replica)
            backend = "NCCL" if cuda and device_type == "cuda" else "gloo"
            rows.append(
                (f"DDP world size 1, --sync-bn ({backend})", relative(distributed[1], plain[1]), TOLERANCE["exact"])
            )
            if device_type == "cuda":
                rows.append(("SyncBatchNorm kernels (CUDA)", sync_batchnorm_kernels(), TOLERANCE["kernels"]))
        finally:
            leave()
            for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                os.environ.pop(key, None)
    if not cuda:
        rows += [("DDP world size 1, --sync-bn (NCCL)", None, TOLERANCE["exact"]),
                 ("SyncBatchNorm kernels (CUDA)", None, TOLERANCE["kernels"])]  # fmt: skip
    return rows


def free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def sync_batchnorm_kernels() -> float:
    """torch's CUDA SyncBatchNorm function (in the process group) against F.batch_norm on the CPU:
    output and the gradients of input, weight and bias."""
    import torch.distributed as dist
    from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction

    generator = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(4, 8, 16, 16, generator=generator), torch.randn(8, generator=generator), torch.randn(8)
    upstream = torch.randn(4, 8, 16, 16, generator=generator)
    results = []
    for device in ("cpu", "cuda"):
        leaves = [t.to(device).requires_grad_() for t in (x, w, b)]
        if device == "cpu":
            y = torch.nn.functional.batch_norm(leaves[0], None, None, leaves[1], leaves[2], training=True)
        else:
            mean, var = torch.zeros(8, device=device), torch.ones(8, device=device)
            y = SyncBatchNormFunction.apply(*leaves, mean, var, 1e-5, 0.1, dist.group.WORLD, 1)
        (y * upstream.to(device)).sum().backward()
        results.append([y.detach(), *(t.grad for t in leaves)])
    return relative(results[1], results[0])


def tiny_glpn(folder: Path) -> Path:
    """A tiny random GLPN (transformers) with its processor, saved as an hf: teacher folder."""
    import transformers

    config = transformers.GLPNConfig(
        num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16, max_depth=80,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.GLPNForDepthEstimation(config).eval().save_pretrained(folder)
    transformers.GLPNImageProcessor().save_pretrained(folder)
    return folder


def check_hf_teacher(cuda: bool, folder: Path) -> list[tuple]:
    """tiekd's hf: pre-processing and model on the device against the CPU's depth."""
    try:
        tiny_glpn(folder / "glpn")
    except ImportError:
        return [("hf: teacher on the device", "transformers not installed", None)]
    from tiekd.pipeline.teachers.load import load_teacher, predict_depth

    image = torch.rand(2, 3, 64, 224, generator=torch.Generator().manual_seed(0))
    depth = {}
    for device in ("cpu", "cuda") if cuda else ("cpu",):
        teacher = load_teacher(f"hf:{folder / 'glpn'}", device=device)
        with torch.no_grad():
            depth[device] = predict_depth(teacher.module, image.to(device), flip_tta=False)
    measured = relative(depth["cuda"], depth["cpu"]) if cuda else None
    return [("hf: teacher on the device", measured, TOLERANCE["teacher"])]


def check_onnx(cuda: bool, folder: Path) -> list[tuple]:
    """The exported test student under onnxruntime's CPU provider, and its CUDA provider when installed."""
    import onnxruntime

    from tiekd.pipeline.deploy.export import DeployedStudent, export_onnx

    model = DeployedStudent(student().eval(), with_entropy=False)
    image = torch.rand(1, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(image)
    path = folder / "student.onnx"
    export_onnx(model, path, SIZE, dynamic_batch=False)
    rows = []
    available = onnxruntime.get_available_providers()
    for provider in ("CPUExecutionProvider", "CUDAExecutionProvider"):
        if provider not in available:
            rows.append((f"onnxruntime {provider}", "provider not installed", None))
            continue
        session = onnxruntime.InferenceSession(str(path), providers=[provider])
        got = session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]
        rows.append((f"onnxruntime {provider}", relative(torch.from_numpy(got), want), TOLERANCE["float32"]))
    return rows


def first_batch(folder: Path, sample, device: str) -> dict:
    """The first batch of train-student's DataLoader for a supervised run on ``device`` (pinned on CUDA)."""
    from tiekd.stages.train_student import build_trainer, make_loader, prepare
    from tiekd.stages.training.config import TrainStudentConfig

    cfg = TrainStudentConfig(
        data_root=sample.data_root, split=sample.train_split, gt_root=sample.gt_root, out=folder / f"run-{device}",
        method="supervised", student="test_resnet", scale=0.25, batch_size=2, pretrained=False, workers=1,
        device=device,
    )  # fmt: skip
    records, cache_ref = prepare(cfg)
    trainer = build_trainer(cfg, len(records), torch.device(device))
    batch = next(iter(make_loader(cfg, records, cache_ref, trainer)))
    pinned = all(v.is_pinned() for v in batch.values() if isinstance(v, torch.Tensor))
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return moved | {"pinned": pinned}


def check_data_path(cuda: bool, folder: Path) -> list[tuple]:
    """Batches through the pinned-memory loader and a non-blocking copy equal the CPU loader's."""
    from tiekd.data.sample.kitti import write_sample_dataset

    sample = write_sample_dataset(folder / "sample", n_train=4, n_test=2, seed=0)
    cpu = first_batch(folder, sample, "cpu")
    if not cuda:
        return [("data path, pinned memory (CUDA)", None, TOLERANCE["exact"])]
    gpu = first_batch(folder, sample, "cuda")
    torch.cuda.synchronize()
    keys = [k for k in cpu if k != "pinned"]
    measured = relative([gpu[k].float() for k in keys], [cpu[k].float() for k in keys])
    return [("data path, pinned memory (CUDA)", measured if gpu["pinned"] else "batches not pinned", 0.0)]


def verdict(measured, tolerance) -> str:
    if measured is None:
        return "not run (no CUDA)"
    if isinstance(measured, str):
        return "FAIL" if tolerance is not None else "skipped"
    return "OK" if measured <= tolerance else "FAIL"


def main() -> int:
    cuda = torch.cuda.is_available()
    machine = torch.cuda.get_device_name() if cuda else "no CUDA device: only the CPU half runs"
    print(f"torch {torch.__version__}, {machine}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = check_steps(cuda) + check_process_group(cuda) + check_hf_teacher(cuda, folder)
        rows += check_onnx(cuda, folder) + check_data_path(cuda, folder)
    print(f"| {'path':<44} | {'relative difference':>19} | {'tolerance':>9} | verdict |")
    print(f"|{'-' * 46}|{'-' * 21}|{'-' * 11}|---------|")
    for name, measured, tolerance in rows:
        shown = measured if isinstance(measured, str) else "-" if measured is None else f"{measured:.2e}"
        limit = "-" if tolerance is None else f"{tolerance:.0e}"
        print(f"| {name:<44} | {shown:>19} | {limit:>9} | {verdict(measured, tolerance)} |")
    failed = [name for name, measured, tolerance in rows if verdict(measured, tolerance) == "FAIL"]
    if not cuda:
        print("no CUDA device here: the CPU half ran; run this script on a machine with a GPU")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
