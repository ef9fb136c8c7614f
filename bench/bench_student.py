"""Benchmark of the deployed student against a teacher-sized network: parameters, FLOPs per
component, latency, images/s and file size in PyTorch eager (the checkpoint's training form and the
deployed form), as a torch.export program, in onnxruntime (float and INT8) and in ExecuTorch.

    python bench/bench_student.py [--height 352 --width 1216 --repeats 3 --batch 2 --threads N
                                   --networks mobilenetv2 mobilenetv2:light resnet50 --with-entropy
                                   --runtimes eager torch.export onnxruntime ...]

Networks are tiekd students (``ENCODER`` or ``ENCODER:light`` for ``--decoder light``), DPM head
with KITTI's 257 bins, random weights (speed does not depend on them). ``resnet50`` with the
DenseDepth decoder has 78.10 M parameters, the size of the paper's AdaBins teacher ("78 M"): it
stands for the teacher. Every network is the exported form (:class:`DeployedStudent`: RGB [0, 1]
in, depth in metres out), built once and run by the three runtimes side by side in one process.

FLOPs come from ``torch.utils.flop_counter`` (a multiply-add counts 2) on meta tensors, split into
encoder, decoder and head, always for one 352x1216 image (whatever size is timed). Latency is the median of ``--repeats`` calls at batch 1 after one
warm-up; images/s is ``--batch`` images over the median time of a call at that batch. With a CUDA
device the eager model is also timed in float16 autocast. The table gives ratios to the last
network (the teacher). On a shared machine the absolute times move; the ratios, measured side by
side, are what to read. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from tiekd.data.kitti import KITTI
from tiekd.pipeline.deploy.export import DeployedStudent, checkpoint_outputs, export_onnx, export_program
from tiekd.pipeline.deploy.quantize import quantize_int8
from tiekd.pipeline.dpm import expected_depth
from tiekd.pipeline.students import build_student
from tiekd.pipeline.teachers.onnx import onnx_session

DEFAULT_NETWORKS = ("mobilenetv2", "mobilenetv2:light", "resnet50")
"""The paper's student, its light-decoder variant, and the 78 M teacher-sized network (last)."""

KB_SIZE = (352, 1216)
"""KITTI's KB crop, the size teachers and students run at (method.md section 6)."""

GIGA = 1e9


RUNTIMES = ("eager (checkpoint)", "eager", "torch.export", "onnxruntime", "onnxruntime int8", "executorch")

CALIBRATION_IMAGES = 2
"""Random images that calibrate the INT8 model (its speed does not depend on them)."""


def build(name: str, with_entropy: bool = False, size: tuple[int, int] | None = None) -> DeployedStudent:
    encoder, _, decoder = name.partition(":")
    student = build_student(encoder, decoder=decoder or "standard", **KITTI.depth_bins)
    return DeployedStudent(student, with_entropy=with_entropy, input_size=size).eval()


def component_flops(name: str, size: tuple[int, int]) -> dict[str, float]:
    """GFLOPs of encoder, decoder and head (1x1 conv and expected depth) for one image of ``size``,
    counted on a copy of the network on meta tensors (nothing is computed)."""
    student = build(name).student.to("meta")
    x = torch.empty(1, 3, *size, device="meta")
    counters = {part: FlopCounterMode(display=False) for part in ("encoder", "decoder", "head")}
    with torch.no_grad():
        with counters["encoder"]:
            features = student.features(x)
        with counters["decoder"]:
            decoded = student.decoder(features)
        with counters["head"]:
            expected_depth(student.output_conv(decoded), student.bin_centres)
    return {part: counter.get_total_flops() / GIGA for part, counter in counters.items()}


def median_seconds(call, repeats: int, synchronise) -> float:
    call()  # warm-up
    synchronise()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronise()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def runtimes(model: DeployedStudent, size, args, folder: Path, device: torch.device) -> tuple[dict, dict]:
    """({runtime: callable(images)}, {runtime: file bytes}) for the runtimes asked (+ fp16 on CUDA)."""
    files = {"torch.export": folder / "m.pt2", "onnxruntime": folder / "m.onnx", "onnxruntime int8": folder / "q.onnx"}
    wanted = set(args.runtimes)
    if wanted & {"onnxruntime", "onnxruntime int8"}:
        export_onnx(model, files["onnxruntime"], size, dynamic_batch=True)
    calls = {
        "eager (checkpoint)": lambda x: checkpoint_outputs(
            model.student, x.to(device), with_entropy=model.with_entropy
        ),
        "eager": lambda x: model(x.to(device)),
    }
    if "torch.export" in wanted:
        export_program(model, files["torch.export"], size, dynamic_batch=True)
        program = torch.export.load(str(files["torch.export"])).module().to(device)
        calls["torch.export"] = lambda x: program(x.to(device))
    for runtime in ("onnxruntime", "onnxruntime int8"):
        if runtime in wanted:
            if runtime.endswith("int8"):
                quantize_int8(
                    files["onnxruntime"], files[runtime], [torch.rand(1, 3, *size).numpy()] * CALIBRATION_IMAGES
                )
            session = onnx_session(files[runtime], cuda=device.type == "cuda", threads=torch.get_num_threads())
            calls[runtime] = lambda x, session=session: session.run(None, {"image": x.numpy()})
    if "executorch" in wanted and importlib.util.find_spec("executorch") is not None:
        calls["executorch"], files["executorch"] = executorch_call(model, size, folder / "m.pte")
    if device.type == "cuda":

        def half(x):
            with torch.autocast("cuda", dtype=torch.float16):
                return model(x.to(device))

        calls["eager fp16"] = half
    calls = {name: call for name, call in calls.items() if name in wanted or name == "eager fp16"}
    return calls, {name: path.stat().st_size for name, path in files.items() if name in calls}


def executorch_call(model: DeployedStudent, size, path: Path):
    """(callable(images), path) of the model as an ExecuTorch program; batch 1, so a batch is a loop."""
    from executorch.runtime import Runtime

    from tiekd.pipeline.deploy.mobile import export_executorch

    model = model.cpu()
    export_executorch(model, path, size, dynamic_batch=False)
    method = Runtime.get().load_program(str(path)).load_method("forward")
    return (lambda x: [method.execute([image[None].contiguous()]) for image in x]), path


def measure(name: str, args, device: torch.device) -> dict:
    size = (args.height, args.width)
    model = build(name, args.with_entropy, size)
    row = {"name": name, "params": sum(p.numel() for p in model.parameters()) / 1e6, "bytes": {}}
    row["flops"] = component_flops(name, KB_SIZE)
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    one, batch = torch.rand(1, 3, *size), torch.rand(args.batch, 3, *size)
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        calls, row["bytes"] = runtimes(model, size, args, Path(folder), device)
        for runtime, call in calls.items():
            latency = median_seconds(lambda: call(one), args.repeats, synchronise)
            batch_time = median_seconds(lambda: call(batch), args.repeats, synchronise)
            row[runtime] = {"latency_ms": latency * 1e3, "images_per_s": args.batch / batch_time}
            print(f"  {name} {runtime}: {latency * 1e3:.0f} ms, {args.batch / batch_time:.2f} images/s", flush=True)
    return row


def table(rows: list[dict]) -> str:
    teacher = rows[-1]
    runtimes_ = [k for k in teacher if isinstance(teacher[k], dict) and k not in ("flops", "bytes")]
    head = ["network", "params (M)", "x teacher", "GFLOPs at 352x1216 enc / dec / head", "GFLOPs x teacher"]
    head += [f"{r} ms (speed-up)" for r in runtimes_] + [f"{r} img/s" for r in runtimes_]
    head += [f"{r} MB" for r in teacher["bytes"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    total = lambda row: sum(row["flops"].values())  # noqa: E731
    for row in rows:
        flops = row["flops"]
        cells = [
            row["name"],
            f"{row['params']:.2f}",
            f"{row['params'] / teacher['params']:.2f}x",
            f"{flops['encoder']:.1f} / {flops['decoder']:.1f} / {flops['head']:.1f}",
            f"{total(row) / total(teacher):.2f}x",
        ]
        cells += [
            f"{row[r]['latency_ms']:.0f} ({teacher[r]['latency_ms'] / row[r]['latency_ms']:.2f}x)" for r in runtimes_
        ]
        cells += [f"{row[r]['images_per_s']:.2f}" for r in runtimes_]
        cells += [f"{row['bytes'].get(r, 0) / 1e6:.1f}" for r in teacher["bytes"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=KB_SIZE[0])
    parser.add_argument("--width", type=int, default=KB_SIZE[1])
    parser.add_argument("--repeats", type=int, default=3, help="Timed calls per figure (median).")
    parser.add_argument("--batch", type=int, default=2, help="Images per call for images/s.")
    parser.add_argument("--threads", type=int, help="CPU threads of torch [default: torch's choice].")
    parser.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS), help="The last one is the teacher.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--with-entropy", action="store_true", help="Export and time the entropy output too.")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = f"{args.height}x{args.width}"
    entropy = ", depth and entropy" if args.with_entropy else ", depth only"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, input {size}{entropy}")
    rows = [measure(name, args, device) for name in args.networks]
    print(table(rows))


if __name__ == "__main__":
    main()
