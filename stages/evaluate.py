"""``tiekd evaluate``: the dataset's protocol (method.md section 8) for a student or a cached teacher.

Default protocol on KITTI, the authors': KB crop, horizontal-flip TTA, prediction clamped to
[1e-3, 80] m, GT valid in (1e-3, 80) inside the Garg crop computed on the 352x1216 map, metrics
per image and then their mean (AdaBins' convention too). ``garg_on="full"`` computes the crop on the
full image first (BTS's convention). Crops and depth range come from the dataset's description.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from tiekd.data.datasets import EvaluationSamples, raise_batch_errors
from tiekd.data.description import fill_presets
from tiekd.data.registry import DEFAULT_DATASET, get_dataset
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint
from tiekd.pipeline.dpm import dpm_entropy, expected_depth
from tiekd.pipeline.errors import ConfigError, DataError, OutputError, StoreError
from tiekd.pipeline.files import os_reason, require_writable_folder
from tiekd.pipeline.metrics import METRIC_NAMES, depth_metrics, mean_metrics
from tiekd.pipeline.sparsification import UNCERTAINTY_METRIC_NAMES, ause_aurg, image_sparsification, mean_curves
from tiekd.stages.runtime import default_workers, progress, resolve_device


@dataclass
class EvaluateConfig:
    """Options of ``tiekd evaluate``, one field per flag."""

    data_root: Path
    gt_root: Path
    split: Path
    checkpoint: Path | None = None
    """A student checkpoint to run (exclusive with ``cache``)."""
    cache: str | None = None
    """A teacher store to evaluate as it is, without running the teacher."""
    teacher: str | None = None
    split_name: str | None = None
    crop: str | None = None
    """Evaluation crop (KITTI: garg, eigen or none); None = the dataset's protocol crop."""
    garg_on: str = "kb"
    """Compute the crop on the cache crop (KITTI: 352x1216 KB crop; authors, AdaBins) or on the full image (BTS)."""
    flip_tta: bool = True
    min_depth: float | None = None
    max_depth: float | None = None
    """Valid GT and prediction clamp range (m); None = the dataset's."""
    json_out: Path | None = None
    save_images: Path | None = None
    device: str = "auto"
    workers: int = field(default_factory=default_workers)
    dataset: str = DEFAULT_DATASET
    """--dataset: which description (tiekd.data.registry) gives readers, crops and depth range."""

    def __post_init__(self):
        description = get_dataset(self.dataset)
        fill_presets(self, description)
        if self.crop is None:
            self.crop = description.eval_crop


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    """Mean over images of each metric."""
    n_images: int
    n_skipped: int
    """Records without GT, or whose GT has no valid pixel inside the evaluation crop."""
    per_image: list[dict] = field(default_factory=list)
    protocol: dict = field(default_factory=dict)
    sparsification: dict | None = None
    """DPM students: mean over images of the sparsification curves (model, oracle, random) of
    rmse, abs_rel and d1 (1 - d1) at removed fractions 0..0.99; their AUSE and AURG are in metrics."""


class StudentPredictor:
    """A trained student under the protocol: resize to its training scale, flip TTA, clamp."""

    def __init__(self, model: torch.nn.Module, *, scale: float = 1.0, flip_tta: bool = True):
        self.model = model.eval()
        self.scale = scale
        self.flip_tta = flip_tta

    def _forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        output = self.model(image)
        if self.model.head != "dpm":
            return output, None
        return expected_depth(output, self.model.bin_centres), dpm_entropy(output)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (B, 3, H, W) -> depth (B, 1, H, W) metres and DPM entropy (nats) or None."""
        size = images.shape[-2:]
        x = images.float() / 255
        if self.scale != 1.0:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", antialias=True, align_corners=False)
        depth, entropy = self._forward(x)
        if self.flip_tta:
            flipped, _ = self._forward(x.flip(-1))
            depth = (depth + flipped.flip(-1)) / 2
        depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
        if entropy is not None:
            entropy = F.interpolate(entropy, size=size, mode="bilinear", align_corners=False)
        return depth, entropy


class CachePredictor:
    """A cached teacher's maps, read from the store (TTA was applied, or not, when caching)."""

    def __init__(self, cache: TeacherCache):
        self.cache = cache

    def __call__(self, images: torch.Tensor, ids: list[str]) -> tuple[torch.Tensor, None]:
        maps = np.stack([self.cache.depth_of(i) for i in ids])
        return torch.from_numpy(maps)[:, None], None


def _mask(dataset, crop: str, garg_on: str, full_size, box, shape) -> np.ndarray:
    """The evaluation crop as a bool mask of the cache-cropped map, computed on it or on the full image."""
    if garg_on == "kb":
        return dataset.eval_mask(crop, *shape)
    top, left = int(box[0]), int(box[1])
    full = dataset.eval_mask(crop, int(full_size[0]), int(full_size[1]))
    return full[top : top + shape[0], left : left + shape[1]]


def _image_scores(pred, gt, entropy, mask, *, min_depth: float, max_depth: float) -> tuple[dict | None, dict | None]:
    """Depth metrics of one (H, W) prediction and, given its DPM entropy (1, 1, H, W), its
    sparsification curves; None where no pixel is valid."""
    kwargs = dict(min_depth=min_depth, max_depth=max_depth, crop=mask)
    metrics = depth_metrics(pred, gt, **kwargs)
    if metrics is None or entropy is None:
        return metrics, None
    return metrics, image_sparsification(pred, gt, entropy[0, 0].float().cpu().numpy(), **kwargs)


def evaluate(
    predict,
    samples: EvaluationSamples,
    *,
    crop: str | None = None,
    garg_on: str = "kb",
    min_depth: float | None = None,
    max_depth: float | None = None,
    device: torch.device = torch.device("cpu"),
    workers: int = 0,
    on_image=None,
    show_progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    gather=list,
) -> EvaluationResult:
    """Metrics of ``predict`` over the samples with GT, under the given protocol.

    ``crop``, ``min_depth`` and ``max_depth`` default to the protocol of the samples' dataset.

    ``predict(images uint8 (B, 3, H, W) on device, ids) -> (depth (B, 1, H, W), entropy or None)``;
    ``on_image(record, image, depth, entropy, gt)`` is called per image (pictures).
    ``shard=(k, n)`` scores records k, k + n, k + 2n, ... and ``gather`` joins every process's
    scores (``stages.distributed.gathered``), so n processes share the work and all return the
    result one process gives.
    """
    dataset = samples.dataset
    protocol = dict(
        dataset=dataset.name,
        crop=crop or dataset.eval_crop,
        garg_on=garg_on,
        min_depth=dataset.min_depth if min_depth is None else min_depth,
        max_depth=dataset.max_depth if max_depth is None else max_depth,
    )
    indices = range(shard[0], len(samples), shard[1])
    scores = gather(_scores(predict, samples, indices, protocol, device, workers, on_image, show_progress))
    return _summary(sorted(scores, key=lambda score: score[0]), len(samples.records), protocol)


def _scores(predict, samples, indices, protocol, device, workers, on_image, show_progress) -> list[tuple]:
    """(record index, per-image row, sparsification curves or None) of each scored record in ``indices``."""
    dataset, crop, min_depth, max_depth = (samples.dataset, protocol["crop"], protocol["min_depth"],
                                           protocol["max_depth"])
    loader = DataLoader(Subset(samples, indices), batch_size=1, num_workers=workers, pin_memory=device.type == "cuda")
    scores = []
    with progress(len(indices), "evaluating", quiet=not show_progress) as bar:
        for batch in loader:
            raise_batch_errors(batch)
            index = int(batch["index"][0])
            record = samples.records[index]
            depth, entropy = predict(batch["image"].to(device), [record.rgb])
            pred = depth[0, 0].float().clamp(min_depth, max_depth).cpu().numpy()
            gt = batch["gt"][0].numpy()
            mask = _mask(dataset, crop, protocol["garg_on"], batch["full_size"][0], batch["box"][0], gt.shape)
            metrics, curves = _image_scores(pred, gt, entropy, mask, min_depth=min_depth, max_depth=max_depth)
            if metrics is not None:
                row = {"id": record.rgb, **metrics, **(ause_aurg(curves) if curves else {})}
                scores.append((index, row, curves))
            if on_image is not None:
                entropy_map = None if entropy is None else entropy[0, 0].cpu().numpy()
                on_image(record, batch["image"][0], pred, entropy_map, gt)
            bar.update(1)
    return scores


def _summary(scores: list[tuple], n_records: int, protocol: dict) -> EvaluationResult:
    """The result over the scores of all records, in record order."""
    per_image = [row for _, row, _ in scores]
    curves = [c for _, _, c in scores if c]
    n_skipped = n_records - len(per_image)
    if not per_image:
        raise DataError(
            f"none of the {n_skipped} records has a ground-truth depth in ({protocol['min_depth']}, "
            f"{protocol['max_depth']}) m inside the {protocol['crop']} crop; check --split and --gt-root"
        )
    metrics = mean_metrics([{k: m[k] for k in METRIC_NAMES} for m in per_image])
    if curves:
        metrics |= {k: float(np.mean([m[k] for m in per_image if k in m])) for k in UNCERTAINTY_METRIC_NAMES}
    return EvaluationResult(
        metrics=metrics,
        n_images=len(per_image),
        n_skipped=n_skipped,
        per_image=per_image,
        protocol=protocol,
        sparsification=mean_curves(curves) if curves else None,
    )


def _image_writer(out: Path, *, max_depth: float, n_bins: int | None, description: str):
    """``on_image`` writing one labelled figure per image: input, depth, GT, error, entropy."""
    from tiekd.pipeline.pictures.figures import evaluation_figure, save_figure

    depth_title = "cached teacher depth" if description.startswith("cached teacher") else "student depth (flip TTA)"

    def write(record, image, depth, entropy, gt) -> None:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(record.rgb).with_suffix("").as_posix())
        rgb = image.permute(1, 2, 0).numpy()
        figure = evaluation_figure(
            rgb, depth, gt, entropy, title=f"{record.rgb}: {description}", depth_title=depth_title,
            max_depth=max_depth, n_bins=n_bins,
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
    model = student_from_checkpoint(state, path=cfg.checkpoint).to(device)
    scale = float(state.get("input_scale", 1.0))
    n_bins = state["architecture"].get("n_bins") if model.head == "dpm" else None
    return StudentPredictor(model, scale=scale, flip_tta=cfg.flip_tta), f"student {cfg.checkpoint}", n_bins


def run(cfg: EvaluateConfig) -> EvaluationResult:
    """Evaluate and, if asked, write the JSON report and the pictures."""
    dataset = get_dataset(cfg.dataset)
    if cfg.garg_on not in ("kb", "full"):
        raise ConfigError(f"--garg-on {cfg.garg_on}: expected kb or full")
    dataset.check_eval_crop(cfg.crop)
    records = dataset.read_split(cfg.split)
    samples = EvaluationSamples(
        records,
        dataset.check_root(cfg.data_root, flag="--data-root"),
        dataset.check_root(cfg.gt_root, flag="--gt-root"),
        dataset=dataset,
    )
    # Before the work: a folder that cannot be written would otherwise fail after the evaluation.
    if cfg.save_images is not None:
        require_writable_folder(cfg.save_images, flag="--save-images")
    if cfg.json_out is not None:
        require_writable_folder(cfg.json_out.parent, flag="--json")
    device = resolve_device(cfg.device)
    predict, description, n_bins = _predictor(cfg, device, records)
    on_image = None
    if cfg.save_images is not None:
        max_depth = dataset.max_depth if cfg.max_depth is None else cfg.max_depth
        on_image = _image_writer(cfg.save_images, max_depth=max_depth, n_bins=n_bins, description=description)
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
        try:
            cfg.json_out.parent.mkdir(parents=True, exist_ok=True)
            cfg.json_out.write_text(json.dumps(result.__dict__, indent=2) + "\n")
        except OSError as e:
            raise OutputError(f"--json {cfg.json_out} cannot be written ({os_reason(e)}); free space") from e
    return result


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
