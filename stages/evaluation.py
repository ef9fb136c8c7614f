"""The evaluation engine: a predictor scored under a dataset's protocol (method.md section 8).

Used by ``tiekd evaluate``, by the per-epoch validation of ``train-student`` and by the demo.
A predictor maps a batch of uint8 images (B, 3, H, W) and their ids to depth (B, 1, H, W) in
metres and, for DPM students, the DPM entropy (nats) or None: :class:`StudentPredictor` runs a
student, :class:`CachePredictor` reads a cached teacher's maps. Metrics are per image, then their
mean over images (BTS's and AdaBins' convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from tiekd.data.datasets import EvaluationSamples, raise_batch_errors
from tiekd.data.registry import get_dataset
from tiekd.pipeline.dpm import dpm_entropy, expected_depth
from tiekd.pipeline.errors import DataError
from tiekd.pipeline.metrics import METRIC_NAMES, depth_metrics, mean_metrics
from tiekd.pipeline.sparsification import UNCERTAINTY_METRIC_NAMES, ause_aurg, image_sparsification, mean_curves
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.runtime import progress


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
    scores (``stages.training.distributed.gathered``), so n processes share the work and all return the
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
    scores = _scores(predict, samples, indices, protocol, device, workers, on_image, show_progress)
    if samples.packed is not None:
        samples.packed.require_unchanged()  # no result of frames packed again while they were read
    scores = gather(scores)
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


def note_trained_dataset(state: dict, dataset: str, checkpoint) -> None:
    """One note on stderr when a student is scored under another dataset's protocol than the one
    it was trained on (cross-dataset tests are legitimate; a forgotten --dataset is not)."""
    trained = (state.get("config") or {}).get("dataset")
    if trained and trained != dataset:
        click.echo(
            f"note: {checkpoint} was trained on {get_dataset(trained).title}; scoring it under "
            f"{get_dataset(dataset).title}'s protocol (--dataset {dataset})",
            err=True,
        )
