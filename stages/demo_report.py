"""The demo's outputs: the markdown results table and the comparison picture."""

from __future__ import annotations

import platform
from pathlib import Path

from PIL import Image

from tiekd.data.datasets import EvaluationSamples
from tiekd.data.registry import get_dataset
from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint
from tiekd.pipeline.pictures.tiles import depth_image, entropy_image, panel, rgb_image, save_png
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.students import build_student
from tiekd.stages.evaluation import StudentPredictor
from tiekd.stages.runtime import resolve_device

METHOD_LABELS = {
    "teacher": "teacher (supervised on dense GT, from its cache)",
    "tiekd": "TIE-KD (DPM + SSIM, paper form)",
    "res-ssim": "response KD, SSIM",
    "supervised": "supervised baseline ({gt_name} GT)",
}
"""Row labels of the demo's table and picture; ``{gt_name}`` is the dataset's (LiDAR, Kinect)."""


def method_label(name: str, dataset: str) -> str:
    """The label of one method's row for the demo's dataset."""
    return METHOD_LABELS[name].format(gt_name=get_dataset(dataset).gt_name)


TILE_SCALE = 0.5
"""Tiles of the comparison picture are half the 352x1216 KB crop."""


def parameter_count(checkpoint: Path) -> int:
    """Trainable parameters of the model a checkpoint describes."""
    model = build_student(**load_checkpoint(checkpoint)["architecture"])
    return sum(p.numel() for p in model.parameters())


def _table(results: dict, seconds: dict, checkpoints: dict, size, dataset: str) -> list[str]:
    """The results table in markdown: one row per method."""
    teacher_arch = load_checkpoint(checkpoints["teacher"])["architecture"]["encoder"]
    lines = [
        "| method | student | parameters | AbsRel | RMSE (m) | d1 | AUSE RMSE (m) | training s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        encoder = teacher_arch if name == "teacher" else size.student_encoder
        metrics = result.metrics
        ause = f"{metrics['ause_rmse']:.3f}" if "ause_rmse" in metrics else "-"
        lines.append(
            f"| {method_label(name, dataset)} | {encoder} | {parameter_count(checkpoints[name]) / 1e6:.2f} M "
            f"| {metrics['abs_rel']:.4f} | {metrics['rmse']:.3f} | {metrics['d1']:.3f} | {ause} | {seconds[name]:.0f} |"
        )
    return lines


def _header(n_images: int, size, student_steps: int, settings: str, dataset: str) -> list[str]:
    """The lines above the table: what was run, under which protocol, on which machine."""
    description = get_dataset(dataset)
    crop = f"{description.eval_crop.capitalize()} crop"
    return [
        "# tiekd demo results",
        "",
        f"Synthetic sample scenes (procedural, not {description.title}), {size.n_train} training and {n_images} "
        f"evaluated test frames; training at {size.scale:g}x resolution, batch {size.batch_size}; teacher "
        f"{size.teacher_steps} steps, students {student_steps} steps each, no ImageNet weights. {description.title} "
        f"protocol: {description.cache_crop_name}, flip TTA, {crop}, depth in [{description.min_depth:g}, "
        f"{description.max_depth:g}] m, metrics per image then averaged.",
        f"Machine: {platform.machine()}; {settings}. Other torch versions, thread counts or CPUs give other "
        "figures (float sums change with the order of the work).",
        "",
    ]


def write_results(
    path: Path,
    *,
    results: dict,
    seconds: dict,
    checkpoints: dict,
    picture: Path,
    size,
    student_steps: int,
    settings: str,
    dataset: str = "kitti",
) -> Path:
    """results.md: one row per method with parameters, AbsRel, RMSE, d1, the AUSE (RMSE) of the DPM
    entropy (DPM students; lower = the entropy ranks the errors better) and training seconds."""
    n_images = next(iter(results.values())).n_images
    header = _header(n_images, size, student_steps, settings, dataset)
    lines = _table(results, seconds, checkpoints, size, dataset)
    path.write_text("\n".join(header + lines + ["", f"![comparison]({picture.name})", ""]))
    return path


def _first_frame(sample, dataset):
    records = dataset.read_split(sample.test_split)
    samples = EvaluationSamples(records, sample.eval_data_root, sample.eval_gt_root, dataset=dataset)
    item = samples[0]
    return samples.records[item["index"]], item["image"]


def write_pictures(path: Path, *, sample, store: str, checkpoints: dict, device: str, dataset: str) -> Path:
    """One PNG, a row per student: input, teacher, student depth, and the student's DPM entropy."""
    description = get_dataset(dataset)
    max_depth = description.max_depth
    record, image = _first_frame(sample, description)
    size = (round(image.shape[2] * TILE_SCALE), round(image.shape[1] * TILE_SCALE))
    shrink = lambda picture: picture.resize(size, Image.Resampling.BILINEAR)  # noqa: E731
    teacher = TeacherCache.open(store, "teacher", Path(sample.test_split).stem).depth_of(record.rgb)
    torch_device = resolve_device(device)
    tiles = []
    for name, checkpoint in checkpoints.items():
        if name == "teacher":
            continue
        state = load_checkpoint(checkpoint)
        model = student_from_checkpoint(state, path=checkpoint).to(torch_device)
        predict = StudentPredictor(model, scale=state["input_scale"], flip_tta=False)
        depth, entropy = predict(image[None].to(torch_device), [record.rgb])
        n_bins = state["architecture"]["n_bins"]
        entropy_tile = (
            entropy_image(entropy[0, 0].cpu().numpy(), n_bins=n_bins)
            if entropy is not None
            else Image.new("RGB", size, (128, 128, 128))
        )
        tiles += [
            ("input", shrink(rgb_image(image.permute(1, 2, 0).numpy()))),
            ("teacher (cached)", shrink(depth_image(teacher, max_depth=max_depth))),
            (
                f"{method_label(name, dataset)}: depth",
                shrink(depth_image(depth[0, 0].cpu().numpy(), max_depth=max_depth)),
            ),
            (
                "DPM entropy (bright = unsure)" if entropy is not None else "no DPM (regression head)",
                shrink(entropy_tile),
            ),
        ]
    return save_png(panel(tiles, columns=4), path)
