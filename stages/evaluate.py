"""``tiekd evaluate``: the dataset's protocol (method.md section 8) for a student or a cached teacher.

Default protocol on KITTI, the authors': KB crop, horizontal-flip TTA, prediction clamped to
[1e-3, 80] m, GT valid in (1e-3, 80) inside the Garg crop computed on the 352x1216 map, metrics
per image and then their mean (AdaBins' convention too). ``garg_on="full"`` computes the crop on the
full image first (BTS's convention). Crops and depth range come from the dataset's description; the engine is
:mod:`tiekd.stages.evaluation`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tiekd.data.datasets import EvaluationSamples
from tiekd.data.description import fill_presets
from tiekd.data.registry import DEFAULT_DATASET, get_dataset
from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint
from tiekd.pipeline.errors import ConfigError, OutputError, StoreError
from tiekd.pipeline.files import os_reason, require_writable_folder
from tiekd.pipeline.metrics import METRIC_NAMES
from tiekd.pipeline.pictures.figures import evaluation_figure, save_figure
from tiekd.pipeline.sparsification import UNCERTAINTY_METRIC_NAMES
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.evaluation import CachePredictor, EvaluationResult, StudentPredictor, evaluate, note_trained_dataset
from tiekd.stages.packed_inputs import evaluation_samples
from tiekd.stages.runtime import default_workers, resolve_device


@dataclass
class EvaluateConfig:
    """Options of ``tiekd evaluate``, one field per flag."""

    data_root: Path | None
    """Root of the split's images (KITTI raw; NYU: the sync folders or the labeled .mat). None = read the split
    packed in the --inputs (or --cache) store, GT included."""
    gt_root: Path | None
    """Root of the split's ground-truth depth (KITTI annotated depth; NYU: the sync folders or the .mat); the depth
    scored."""
    split: Path
    """Split file, one 'RGB GT|None FOCAL' record a line."""
    checkpoint: Path | None = None
    """Student checkpoint (exclusive with --cache)."""
    inputs: str | None = None
    """Store holding the split's images and GT packed (tiekd cache pack), read when --data-root is not given
    [default: the --cache store]."""
    cache: str | None = None
    """Teacher store: a path or fsspec URL. Its maps are evaluated as they are, without running the teacher."""
    teacher: str | None = None
    """Teacher group in the store."""
    split_name: str | None = None
    """Split group in the store."""
    crop: str | None = None
    """Evaluation crop (KITTI: garg, eigen or none); None = the dataset's protocol crop."""
    garg_on: str = "kb"
    """Compute the crop on the cache crop (KITTI: 352x1216 KB crop; authors, AdaBins) or on the full image (BTS)."""
    flip_tta: bool = True
    """Average with the flipped-back prediction of the mirrored image."""
    min_depth: float | None = None
    """Smallest valid GT and prediction clamp (m); None = the dataset's. Not a flag: the protocol's."""
    max_depth: float | None = None
    """Largest valid GT and prediction clamp (m); None = the dataset's. Not a flag: the protocol's."""
    json_out: Path | None = None
    """Write the metrics as JSON."""
    save_images: Path | None = None
    """Write one labelled figure per image: input, depth, GT, error, DPM entropy (colour bars in metres)."""
    device: str = "auto"
    """Where to compute: auto = cuda when available, else cpu."""
    workers: int = field(default_factory=default_workers)
    """DataLoader worker processes that read and decode ahead (0: in this process)."""
    dataset: str = DEFAULT_DATASET
    """Dataset layout and protocol (kitti, nyu, or a description file PATH.yaml); crops, depth range, bins and
    sigma follow it unless given."""

    def __post_init__(self):
        description = get_dataset(self.dataset)
        fill_presets(self, description)
        if self.crop is None:
            self.crop = description.eval_crop


def _image_writer(out: Path, *, dataset, max_depth: float, n_bins: int | None, description: str):
    """``on_image`` writing one labelled figure per image: input, depth, GT, error, entropy."""
    depth_title = "cached teacher depth" if description.startswith("cached teacher") else "student depth (flip TTA)"

    def write(record, image, depth, entropy, gt) -> None:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(record.rgb).with_suffix("").as_posix())
        rgb = image.permute(1, 2, 0).numpy()
        figure = evaluation_figure(
            rgb, depth, gt, entropy, title=f"{record.rgb}: {description}", depth_title=depth_title,
            max_depth=max_depth, n_bins=n_bins, crop_name=dataset.cache_crop_name, gt_name=dataset.gt_name,
        )  # fmt: skip
        save_figure(figure, out / f"{stem}.png")

    return write


def _predictor(cfg: EvaluateConfig, device: torch.device, records: list):
    """(predict, description, n_bins) for a checkpoint or a cache holding every record's map."""
    if (cfg.checkpoint is None) == (cfg.cache is None):
        raise ConfigError("pass exactly one of --checkpoint (a student) and --cache (a cached teacher)")
    if cfg.cache is not None:
        cache = TeacherCache.open_for_split(cfg.cache, cfg.teacher, cfg.split_name, cfg.split)
        dataset = get_dataset(cfg.dataset)
        cache.spec.require_dataset(dataset.name, location=cache.location)
        if tuple(cache.spec.crop) != tuple(dataset.cache_crop):
            crop = "x".join(map(str, cache.spec.crop))
            raise StoreError(f"{cache.location} holds {crop} maps; evaluation needs the {dataset.cache_crop_title}")
        cache.require_stored([r.rgb for r in records], what="evaluation images")
        return CachePredictor(cache), f"cached teacher {cache.location}", None
    state = load_checkpoint(cfg.checkpoint)
    note_trained_dataset(state, cfg.dataset, cfg.checkpoint)
    model = student_from_checkpoint(state, path=cfg.checkpoint).to(device)
    scale = float(state.get("input_scale", 1.0))
    n_bins = state["architecture"].get("n_bins") if model.head == "dpm" else None
    return StudentPredictor(model, scale=scale, flip_tta=cfg.flip_tta), f"student {cfg.checkpoint}", n_bins


def _checked_samples(cfg: EvaluateConfig, dataset) -> EvaluationSamples:
    """The split's samples, after every check that can fail before the work: options, split,
    roots, and the output folders (which would otherwise fail after the evaluation)."""
    if cfg.garg_on not in ("kb", "full"):
        raise ConfigError(f"--garg-on {cfg.garg_on}: expected kb or full")
    dataset.check_eval_crop(cfg.crop)
    records = dataset.read_split(cfg.split)
    samples = evaluation_samples(cfg, records, dataset, what="evaluation images")
    if cfg.save_images is not None:
        require_writable_folder(cfg.save_images, flag="--save-images")
    if cfg.json_out is not None:
        require_writable_folder(cfg.json_out.parent, flag="--json")
    return samples


def run(cfg: EvaluateConfig) -> EvaluationResult:
    """Evaluate and, if asked, write the JSON report and the pictures."""
    dataset = get_dataset(cfg.dataset)
    samples = _checked_samples(cfg, dataset)
    device = resolve_device(cfg.device)
    predict, description, n_bins = _predictor(cfg, device, samples.records)
    on_image = None
    if cfg.save_images is not None:
        max_depth = dataset.max_depth if cfg.max_depth is None else cfg.max_depth
        on_image = _image_writer(
            cfg.save_images, dataset=dataset, max_depth=max_depth, n_bins=n_bins, description=description
        )
    result = evaluate(
        predict,
        samples,
        crop=cfg.crop,
        garg_on=cfg.garg_on,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        device=device,
        workers=cfg.workers,
        on_image=on_image,
    )
    result.protocol |= {
        "model": description,
        "split": str(cfg.split),
        "flip_tta": cfg.flip_tta if cfg.checkpoint else None,
    }
    if cfg.json_out is not None:
        _write_json(result, cfg.json_out)
    return result


def _write_json(result: EvaluationResult, path: Path) -> None:
    """The whole result (metrics, per image, protocol, curves) as JSON at ``path`` (--json)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.__dict__, indent=2) + "\n")
    except OSError as e:
        raise OutputError(f"--json {path} cannot be written ({os_reason(e)}); free space") from e


def format_result(result: EvaluationResult) -> str:
    """The table printed after an evaluation: protocol, split, images, each metric."""
    p = result.protocol
    dataset = get_dataset(p["dataset"])
    crop_on = dataset.cache_crop_title if p["garg_on"] == "kb" else "full image"
    crop = "no crop" if p["crop"] == "none" else f"{p['crop']} crop on the {crop_on}"
    tta = {True: ", flip TTA", False: ", no TTA", None: ""}[p.get("flip_tta")]
    lines = [
        f"{p.get('model', 'model')} on {p.get('split', '?')}: {result.n_images} images "
        f"({result.n_skipped} without GT skipped); {dataset.cache_crop_name}, {crop}{tta}, "
        f"depth in [{p['min_depth']}, {p['max_depth']}] m",
        " | ".join(f"{name:>8}" for name in METRIC_NAMES),
        " | ".join(f"{result.metrics.get(name, float('nan')):8.4f}" for name in METRIC_NAMES),
    ]
    if result.sparsification is not None:
        lines += [
            "DPM entropy as uncertainty (sparsification; AUSE lower is better, AURG higher; d1 = 1 - d1):",
            " | ".join(f"{name:>12}" for name in UNCERTAINTY_METRIC_NAMES),
            " | ".join(f"{result.metrics[name]:12.4f}" for name in UNCERTAINTY_METRIC_NAMES),
        ]
    return "\n".join(lines)
