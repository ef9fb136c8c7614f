"""``tiekd explain``: what a DPM student believes, image by image and pixel by pixel.

For each chosen image one figure (input, cached teacher depth, student depth, |error| against GT,
DPM entropy, KL(teacher DPM || student DPM), and the student's distribution against the teacher's
DPM at a few pixels), the sparsification curves of the DPM entropy over those images, and an
offline ``index.html`` showing them with captions. The teacher DPM is built from the cached
teacher depth with the checkpoint's own sigma and DPM form, as its training built it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tiekd.data.datasets import raise_batch_errors, resize_sample
from tiekd.data.registry import DEFAULT_DATASET, get_dataset
from tiekd.pipeline import explain as explaining
from tiekd.pipeline.checkpoint import load_checkpoint, student_from_checkpoint
from tiekd.pipeline.dpm import bin_edges, dpm_sigma
from tiekd.pipeline.errors import ConfigError, DataError
from tiekd.pipeline.files import require_writable_folder
from tiekd.pipeline.losses import TIEKD_ALPHA
from tiekd.pipeline.pictures.explain import caption, explanation_figure, sparsification_figure, write_index
from tiekd.pipeline.pictures.figures import save_figure
from tiekd.pipeline.sparsification import (
    REMOVED_FRACTIONS,
    UNCERTAINTY_METRIC_NAMES,
    ause_aurg,
    image_sparsification,
    mean_curves,
)
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.evaluation import note_trained_dataset
from tiekd.stages.packed_inputs import evaluation_samples
from tiekd.stages.runtime import resolve_device


@dataclass
class ExplainConfig:
    """Options of ``tiekd explain``, one field per flag."""

    checkpoint: Path
    """Student checkpoint (a DPM student)."""
    data_root: Path | None
    """Root of the split's images (KITTI raw; NYU: the sync folders or the labeled .mat). None = read the split
    packed in the --inputs (or --cache) store, GT included."""
    gt_root: Path | None
    """Root of the split's ground-truth depth (KITTI annotated depth; NYU: the sync folders or the .mat); the GT drawn
    and scored."""
    split: Path
    """Split file, one 'RGB GT|None FOCAL' record a line."""
    out: Path
    """Folder for the figures and index.html."""
    inputs: str | None = None
    """Store holding the split's images and GT packed (tiekd cache pack), read when --data-root is not given
    [default: the --cache store]."""
    cache: str | None = None
    """Teacher store: a path or fsspec URL. Without it the teacher depth, DPM and KL panels stay empty."""
    teacher: str | None = None
    """Teacher group in the store."""
    split_name: str | None = None
    """Split group in the store."""
    images: int = 4
    """Explain the first N records with GT (unless --ids)."""
    ids: tuple[str, ...] = ()
    """RGB path of a record, as in the split (repeatable)."""
    pixels: tuple[tuple[int, int], ...] = ()
    """(row, col) on the cache crop (repeatable); replaces the automatic choice."""
    crop: str | None = None
    """Evaluation crop holding the automatic pixels and the sparsification curves; None = the dataset's."""
    dataset: str = DEFAULT_DATASET
    """Dataset layout and protocol (kitti, nyu, or a description file PATH.yaml); crops, depth range, bins and
    sigma follow it unless given."""
    evaluation: Path | None = None
    """An `evaluate --json` file: also draw its set's curves (those of a DPM student's whole evaluated set)."""
    device: str = "auto"
    """Where to compute: auto = cuda when available, else cpu."""


@dataclass
class ExplainResult:
    index: Path
    figures: list[Path] = field(default_factory=list)
    scores: dict = field(default_factory=dict)
    """Mean AUSE / AURG over the explained images."""


def _records(cfg: ExplainConfig, dataset):
    records = dataset.read_split(cfg.split)
    if cfg.ids:
        by_id = {r.rgb: r for r in records}
        unknown = [i for i in cfg.ids if i not in by_id]
        if unknown:
            raise ConfigError(f"--ids {unknown[0]} is not a record of {cfg.split}; pass RGB paths as in the split file")
        records = [by_id[i] for i in cfg.ids]
    samples = evaluation_samples(cfg, records, dataset, what="chosen images")
    if len(samples) == 0:
        raise DataError(f"none of the chosen records of {cfg.split} has ground truth; choose others with --ids")
    return samples, len(samples) if cfg.ids else min(cfg.images, len(samples))


def _student(cfg: ExplainConfig, device: torch.device, dataset):
    state = load_checkpoint(cfg.checkpoint)
    model = student_from_checkpoint(state, path=cfg.checkpoint).to(device).eval()
    if model.head != "dpm":
        raise ConfigError(f"{cfg.checkpoint} is a regression student; explain needs a DPM student (--method tiekd)")
    note_trained_dataset(state, dataset.name, cfg.checkpoint)
    training = state.get("config") or {}
    form = training.get("dpm_form", "paper")
    alpha = training.get("alpha", TIEKD_ALPHA)
    paper_sigma = get_dataset(training.get("dataset", dataset.name)).sigma  # the sigma it was trained with
    dpm = {"sigma": dpm_sigma(training.get("sigma"), form, paper_sigma=paper_sigma, alpha=alpha)[0], "form": form}
    edges = bin_edges(model.min_depth, model.max_depth, model.arch["n_bins"])
    return model, float(state.get("input_scale", 1.0)), edges, dpm


@dataclass
class _Context:
    model: torch.nn.Module
    scale: float
    edges: torch.Tensor
    dpm: dict
    cache: TeacherCache | None
    dataset: object
    region: np.ndarray | None = None


def _explain_one(item: dict, record_id: str, ctx: _Context, pixels) -> explaining.ImageExplanation:
    image, gt = item["image"], item["gt"].numpy()
    teacher = None if ctx.cache is None else torch.from_numpy(ctx.cache.depth_of(record_id).astype(np.float32))
    sample = {"image": image.float() / 255} | ({} if teacher is None else {"teacher": teacher[None]})
    small = resize_sample(sample, ctx.scale)
    device = ctx.edges.device
    with torch.no_grad():
        logits = ctx.model(small["image"][None].to(device)).float()
    centres = ctx.model.bin_centres
    depth, entropy = explaining.student_maps(logits, centres, gt.shape)
    kl = None
    if teacher is not None:
        kl = explaining.kl_map(logits, small["teacher"][None].to(device), ctx.edges, **ctx.dpm)
    explanation = explaining.ImageExplanation(
        id=record_id, image=image.permute(1, 2, 0).numpy(), gt=gt, student_depth=depth, entropy=entropy,
        teacher_depth=None if teacher is None else teacher.numpy(), kl=kl, n_bins=len(centres),
    )  # fmt: skip
    if pixels:
        points = {f"pixel ({row}, {col})": (row, col) for row, col in pixels}
    else:
        edge_depth = explanation.teacher_depth if teacher is not None else depth
        points = explaining.pick_pixels(
            entropy=entropy, error=explanation.error, gt=gt, edge_depth=edge_depth, region=ctx.region
        )
    explanation.pixels = explaining.explain_pixels(
        explanation, logits, points, centres=centres, edges=ctx.edges, **ctx.dpm
    )
    return explanation


def parse_pixel(value: str) -> tuple[int, int]:
    """``--pixel "120,600"`` -> (120, 600)."""
    match = re.fullmatch(r"(\d+),(\d+)", value.strip())
    if not match:
        raise ConfigError(f"--pixel {value!r} is not ROW,COL, e.g. 200,600")
    return int(match[1]), int(match[2])


def _check_pixels(pixels, shape, crop_name: str) -> None:
    for row, col in pixels:
        if not (0 <= row < shape[0] and 0 <= col < shape[1]):
            raise ConfigError(f"--pixel {row},{col} is outside the {shape[0]}x{shape[1]} {crop_name}")


def _figure_of(k: int, samples, ctx: _Context, cfg: ExplainConfig) -> tuple[explaining.ImageExplanation, Path]:
    """Explain the k-th sample and save its figure as ``image-KKK.png``."""
    item = samples[k]
    raise_batch_errors({"error": [item["error"]]})
    ctx.region = ctx.dataset.eval_mask(cfg.crop or ctx.dataset.eval_crop, *item["gt"].shape)
    _check_pixels(cfg.pixels, item["gt"].shape, ctx.dataset.cache_crop_name)
    explanation = _explain_one(item, samples.records[item["index"]].rgb, ctx, cfg.pixels)
    centres = ctx.model.bin_centres.cpu().numpy()
    crop_name = ctx.dataset.cache_crop_name
    figure = explanation_figure(explanation, centres=centres, max_depth=ctx.model.max_depth, crop_name=crop_name)
    return explanation, save_figure(figure, cfg.out / f"image-{k:03d}.png")


def run(cfg: ExplainConfig) -> ExplainResult:
    """Write the figures and ``index.html`` into ``cfg.out``."""
    device = resolve_device(cfg.device)
    dataset = get_dataset(cfg.dataset)
    if cfg.crop is not None:
        dataset.check_eval_crop(cfg.crop)
    require_writable_folder(cfg.out, flag="--out")
    samples, count = _records(cfg, dataset)
    model, scale, edges, dpm = _student(cfg, device, dataset)
    cache = None
    if cfg.cache is not None:
        cache = TeacherCache.open_for_split(cfg.cache, cfg.teacher, cfg.split_name, cfg.split)
    ctx = _Context(model=model, scale=scale, edges=edges.to(device), dpm=dpm, cache=cache, dataset=dataset)
    result, entries, curves = ExplainResult(index=cfg.out / "index.html"), [], []
    for k in range(count):
        explanation, path = _figure_of(k, samples, ctx, cfg)
        result.figures.append(path)
        entries.append((path.name, caption(explanation)))
        image_curves = image_sparsification(
            explanation.student_depth, explanation.gt, explanation.entropy, crop=ctx.region,
            min_depth=model.min_depth, max_depth=model.max_depth,
        )  # fmt: skip
        curves += [image_curves] if image_curves is not None else []
    if curves:
        result.scores = {k: float(np.mean([ause_aurg(c)[k] for c in curves])) for k in UNCERTAINTY_METRIC_NAMES}
        figure = sparsification_figure(mean_curves(curves), result.scores, REMOVED_FRACTIONS, len(curves))
        result.figures.append(save_figure(figure, cfg.out / "sparsification.png"))
        entries.append(("sparsification.png", _curves_caption(result.scores, len(curves))))
    if cfg.evaluation is not None:
        result.figures.append(_evaluated_curves(cfg.evaluation, cfg.out / "sparsification-evaluated.png", entries))
    teacher = cfg.cache or "not given"
    intro = f"Student {cfg.checkpoint}; teacher {teacher}; split {cfg.split}; "
    intro += f"DPM sigma {dpm['sigma']} m, form {dpm['form']}."
    write_index(cfg.out, entries, title="tiekd explain", intro=intro)
    return result


def _evaluated_curves(path: Path, out: Path, entries: list) -> Path:
    """Draw the mean sparsification curves an ``evaluate --json`` file holds; add their caption."""
    try:
        evaluation = json.loads(Path(path).read_text())
        curves, n_images = evaluation["sparsification"], evaluation["n_images"]
        if curves is None:
            raise ConfigError(f"--evaluation {path} holds no sparsification curves; evaluate a DPM student with --json")
        scores = {k: evaluation["metrics"][k] for k in UNCERTAINTY_METRIC_NAMES}
        points = len(curves["rmse"]["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--evaluation {path} is not an `evaluate --json` file of a DPM student ({e})") from e
    if points != len(REMOVED_FRACTIONS):
        raise ConfigError(
            f"--evaluation {path} holds {points}-point curves of tiekd's AUSE before Poggi et al.'s definition "
            f"({len(REMOVED_FRACTIONS)} points); run `tiekd evaluate --json` again"
        )
    figure = sparsification_figure(curves, scores, REMOVED_FRACTIONS, n_images)
    model = evaluation.get("protocol", {}).get("model", "?")
    entries.append(
        (out.name, f"Sparsification curves of the whole evaluated set: {model}, {n_images} images, from {path}. "
         f"AUSE (RMSE) {scores['ause_rmse']:.3f} m, AURG (RMSE) {scores['aurg_rmse']:.3f} m.")
    )  # fmt: skip
    return save_figure(figure, out)


def _curves_caption(scores: dict, n_images: int) -> str:
    return (
        f"Sparsification curves of the DPM entropy over the {n_images} image(s) above (no flip TTA): "
        f"removing the most uncertain pixels first (model) against removing the largest errors first "
        f"(oracle) and the metric of all pixels (random). AUSE (RMSE) {scores['ause_rmse']:.3f} m, "
        f"AURG (RMSE) {scores['aurg_rmse']:.3f} m."
    )


def report(result: ExplainResult) -> str:
    return f"wrote {len(result.figures)} figure(s) and {result.index}"
