"""hf: teachers, pre-processing batched on the device against per image on the CPU, side by side.

    python bench/bench_teacher_hf.py [--frames 8] [--batch-size 4] [--rounds 3] [--teacher-frames 2] [--device cpu]

A random-initialised model of Depth Anything V2 Small's size (DINOv2-S backbone, DPT head, metric,
max depth 80; ~25 M parameters) with Depth Anything's processor settings (518, keep aspect, multiple
of 14, bicubic, ImageNet mean/std), on KB crops (352x1216 uint8). Two pipelines over the same frames,
alternated round by round so a busy machine slows both alike:

- device: tiekd's hf: path, the torchvision image processor on the whole batch on the device;
- per image: the same settings in transformers' PIL-backend processor, one image at a time on the CPU.

Printed: frames/s of the pre-processing alone (``--frames``, ``--rounds``) and of the whole teacher
(processor, model, post-processing; ``--teacher-frames``, one round: Depth Anything upsamples a KB crop
to 518x1792, about a minute a frame on two CPU cores), and their ratios.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import transformers

from tiekd.pipeline.teachers.hf import HFDepthTeacher
from tiekd.pipeline.teachers.load import predict_depth

KB_CROP = (352, 1216)
DEPTH_ANYTHING_PROCESSOR = dict(
    size={"height": 518, "width": 518},
    keep_aspect_ratio=True,
    ensure_multiple_of=14,
    resample=3,  # bicubic
    image_mean=[0.485, 0.456, 0.406],
    image_std=[0.229, 0.224, 0.225],
)
"""The image processor settings of depth-anything/Depth-Anything-V2-Small-hf."""


def depth_anything_small() -> torch.nn.Module:
    """Depth Anything V2 Small's architecture (transformers' defaults are the small model), metric."""
    config = transformers.DepthAnythingConfig(depth_estimation_type="metric", max_depth=80)
    torch.manual_seed(0)
    return transformers.DepthAnythingForDepthEstimation(config).eval()


def frames_per_second(step, images: torch.Tensor, batch_size: int) -> float:
    start = time.perf_counter()
    for batch in images.split(batch_size):
        step(batch)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--teacher-frames", type=int, default=2, help="Frames for the whole-teacher rates (0: skip).")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = depth_anything_small().to(device)
    teachers = {
        "device": HFDepthTeacher(model, transformers.DPTImageProcessor(**DEPTH_ANYTHING_PROCESSOR)),
        "per image": HFDepthTeacher(model, transformers.DPTImageProcessorPil(**DEPTH_ANYTHING_PROCESSOR)),
    }
    generator = torch.Generator().manual_seed(0)
    uint8 = torch.randint(0, 256, (args.frames, 3, *KB_CROP), generator=generator, dtype=torch.uint8)
    images = (uint8.float() / 255).to(device)
    rates = {(name, part): [] for name in teachers for part in ("pre-processing", "teacher")}
    with torch.no_grad():
        for teacher in teachers.values():  # warm-up
            teacher.pixel_values(images[: args.batch_size])
        for _ in range(args.rounds):
            for name, teacher in teachers.items():
                rates[name, "pre-processing"].append(frames_per_second(teacher.pixel_values, images, args.batch_size))
        for name, teacher in teachers.items() if args.teacher_frames else ():
            step = lambda batch: predict_depth(teacher, batch, flip_tta=False)  # noqa: E731
            rates[name, "teacher"].append(frames_per_second(step, images[: args.teacher_frames], args.batch_size))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {device}, {args.frames} frames {KB_CROP[0]}x{KB_CROP[1]}, batch {args.batch_size}, "
          f"median of {args.rounds} rounds")
    for part in ("pre-processing", "teacher")[: 2 if args.teacher_frames else 1]:
        fast, slow = (float(np.median(rates[name, part])) for name in teachers)
        print(f"{part:>15}: device {fast:8.2f} frames/s, per image {slow:8.2f} frames/s, ratio {fast / slow:.2f}x")


if __name__ == "__main__":
    main()
