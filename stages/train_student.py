"""Stage two, ``tiekd train-student``: train a student from the teacher cache.

The teacher never runs here: its maps come from the store, the DPM is built from them inside
the loss on the training device. A run directory holds ``run.json`` (resolved options),
``steps.jsonl`` and ``epochs.jsonl`` (metrics), ``last.pt`` and, with a validation split,
``best.pt`` (lowest validation RMSE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tiekd.data.augment import AugmentConfig
from tiekd.data.datasets import DistillationSamples
from tiekd.data.description import fill_presets
from tiekd.data.registry import DEFAULT_DATASET, get_dataset
from tiekd.pipeline.checkpoint import load_checkpoint, remove_partial_checkpoints
from tiekd.pipeline.dpm import DPM_FORMS, MAX_N_BINS, bin_edges, dpm_sigma
from tiekd.pipeline.errors import ConfigError, DataError
from tiekd.pipeline.files import require_writable_folder
from tiekd.pipeline.methods import METHODS, Objective, head_for, needs_gt, needs_teacher
from tiekd.pipeline.students import build_student
from tiekd.stages.config_file import write_rerun_config
from tiekd.stages.training.distributed import SINGLE, Processes, join, leave, processes_from_env, replicate
from tiekd.stages.training.identity import cache_differences, cache_identity
from tiekd.stages.runtime import default_workers, resolve_device, use_amp
from tiekd.stages.training.sampler import EpochSampler, check_cache, seed_everything
from tiekd.stages.training.log import RunLog
from tiekd.stages.training.loop import TrainSummary, train
from tiekd.stages.training.trainer import Trainer, config_dict, optimisation

CHECKPOINT_NAMES = ("last.pt", "best.pt")
"""Checkpoints of a run directory; a kill mid-write leaves their temporaries, removed on the next start."""


@dataclass
class TrainStudentConfig:
    """Options of ``tiekd train-student``, one field per flag."""

    data_root: Path
    """Image root (KITTI raw root)."""
    split: Path
    """Training split file."""
    out: Path
    """Run directory."""
    cache: str | None = None
    """Teacher store (required by every method but supervised)."""
    teacher: str | None = None
    """Teacher group in the store; optional where it holds one."""
    split_name: str | None = None
    """Split group in the store; default the only one, or the split file's stem."""
    gt_root: Path | None = None
    """Annotated depth root (supervised training and validation)."""
    student: str = "mobilenetv2"
    """Preset (mobilenetv2, resnet18, resnet50) or any timm model name."""
    method: str = "tiekd"
    decoder: str = "standard"
    """Student decoder: the authors' ("standard") or "light" (fewer channels at full resolution)."""
    epochs: int = 24
    batch_size: int = 8
    """Samples per process and micro-batch (the paper: 8 per GPU)."""
    accumulate: int = 1
    """Micro-batches accumulated into one step: global batch = processes x batch_size x accumulate."""
    sync_bn: bool = False
    """BatchNorm with the statistics of all processes' batches (torchrun runs)."""
    crop: tuple[int, int] | None = None
    """Random training crop (H, W) taken from the dataset's train region; None = the dataset's."""
    scale: float = 1.0
    """Resize crop and maps by this factor (quick experiments at low resolution)."""
    lr: float = 1e-3
    """Maximum learning rate of the one-cycle schedule."""
    alpha: float = 0.1
    sigma: float | None = None
    """Std (m) of the teacher DPM; None = the form's default (dpm_sigma: code 0.5, paper the dataset's)."""
    dpm_form: str = "paper"
    n_bins: int | None = None
    """DPM bins; None = the dataset's."""
    min_depth: float | None = None
    max_depth: float | None = None
    """Depth range (m) of bins and regression head; None = the dataset's."""
    loss_top_row: int | None = None
    """First row of the (unscaled) crop the TIE-KD loss sees (KITTI's sky rows lie above it); None = the dataset's."""
    max_steps: int | None = None
    """Stop after this many steps (the schedule spans them)."""
    val_split: Path | None = None
    """Split evaluated after every epoch; best.pt keeps the lowest RMSE."""
    val_data_root: Path | None = None
    """Images of --val-split where they are not under --data-root (NYU: official_splits/test or the .mat)."""
    val_gt_root: Path | None = None
    """GT of --val-split where it is not under --gt-root."""
    pretrained: bool = True
    """Start from timm's ImageNet weights, as the paper's students do."""
    resume: bool | str = False
    """True: continue the run in ``out``; "auto": continue it if it has a last.pt, else start it."""
    device: str = "auto"
    amp: bool = False
    workers: int = field(default_factory=default_workers)
    seed: int = 0
    save_every: int = 500
    """Also write last.pt every this many steps (and at every epoch end)."""
    dataset: str = DEFAULT_DATASET
    """--dataset: which description (tiekd.data.registry) gives readers, crops and the presets above."""

    def __post_init__(self):
        description = get_dataset(self.dataset)
        if self.crop is None:
            self.crop = description.train_crop
        fill_presets(self, description)


def _check_config(cfg: TrainStudentConfig) -> None:
    if cfg.method not in METHODS:
        raise ConfigError(f"--method {cfg.method!r} is not one of {', '.join(METHODS)}")
    if needs_teacher(cfg.method) and cfg.cache is None:
        raise ConfigError(f"--method {cfg.method} distils from a teacher: pass --cache STORE")
    if (needs_gt(cfg.method) or (cfg.val_split and cfg.val_gt_root is None)) and cfg.gt_root is None:
        raise ConfigError(f"--method {cfg.method}{' with --val-split' if cfg.val_split else ''} needs --gt-root")
    if cfg.resume not in (False, True, "auto"):
        raise ConfigError(f"--resume {cfg.resume!r} is not one of yes, auto (or leave it out)")
    if cfg.accumulate < 1:
        raise ConfigError(f"--accumulate {cfg.accumulate} must be at least 1")
    if not 0 < cfg.scale <= 1:
        raise ConfigError(f"--scale {cfg.scale} must be in (0, 1]")
    dataset = get_dataset(cfg.dataset)
    if cfg.crop[0] > dataset.train_size[0] or cfg.crop[1] > dataset.train_size[1]:
        raise ConfigError(f"--crop {cfg.crop[0]}x{cfg.crop[1]} is larger than the {dataset.train_region_title}")
    _check_loss_options(cfg)


def _check_loss_options(cfg: TrainStudentConfig) -> None:
    """Refuse loss and bin settings the training step would only fail on (or silently misuse)."""
    if cfg.dpm_form not in DPM_FORMS:
        raise ConfigError(f"--dpm-form {cfg.dpm_form!r} is not one of {', '.join(DPM_FORMS)}")
    if not 2 <= cfg.n_bins <= MAX_N_BINS:
        default = get_dataset(cfg.dataset).n_bins
        raise ConfigError(f"--n-bins {cfg.n_bins} must be in [2, {MAX_N_BINS}] (default {default})")
    if cfg.sigma is not None and not cfg.sigma > 0:
        raise ConfigError(f"--sigma {cfg.sigma} must be a positive standard deviation in metres")
    # The released code has a config with alpha = 1.5, a negative weight on the depth term.
    if not 0 <= cfg.alpha <= 1:
        raise ConfigError(f"--alpha {cfg.alpha} must be in [0, 1]: it weighs the DPM term against the depth term")
    if not cfg.lr > 0:
        raise ConfigError(f"--lr {cfg.lr} must be positive")
    if not 0 < cfg.min_depth < cfg.max_depth:
        raise ConfigError(f"--max-depth {cfg.max_depth} must be above the minimum depth {cfg.min_depth} m")
    if not 0 <= cfg.loss_top_row < cfg.crop[0]:
        raise ConfigError(f"--loss-top-row {cfg.loss_top_row} must be a row of the {cfg.crop[0]}-row --crop")


def _objective(cfg: TrainStudentConfig, device: torch.device) -> Objective:
    return Objective(
        method=cfg.method,
        edges=bin_edges(cfg.min_depth, cfg.max_depth, cfg.n_bins).to(device),
        alpha=cfg.alpha,
        sigma=dpm_sigma(cfg.sigma, cfg.dpm_form, paper_sigma=get_dataset(cfg.dataset).sigma)[0],
        dpm_form=cfg.dpm_form,
        top_row=round(cfg.loss_top_row * cfg.scale),
    )


RESUME_KEYS = (
    "method",
    "student",
    "epochs",
    "global_batch",
    "crop",
    "scale",
    "max_steps",
    "seed",
    "split",
    "n_bins",
    "min_depth",
    "max_depth",
    "lr",
    "alpha",
    "sigma",
    "dpm_form",
    "loss_top_row",
)
"""Options a resumed run must share with the run it continues (same steps, data order and schedule).
The global batch may be split differently: other processes, --batch-size or --accumulate."""


def build_trainer(
    cfg: TrainStudentConfig, n_frames: int, device: torch.device, processes: Processes = SINGLE
) -> Trainer:
    """The run's objects at step 0; the step takes ``processes.world_size`` x batch x accumulate samples."""
    global_batch = processes.world_size * cfg.batch_size * cfg.accumulate
    steps_per_epoch = n_frames // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"the split has {n_frames} images, fewer than the global batch of {global_batch} "
            f"(--batch-size {cfg.batch_size} x --accumulate {cfg.accumulate} x {processes.world_size} processes)"
        )
    total_steps = (
        cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    )
    seed_everything(cfg.seed)
    model = build_student(
        cfg.student,
        head=head_for(cfg.method),
        n_bins=cfg.n_bins,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        pretrained=cfg.pretrained,
        decoder=cfg.decoder,
    ).to(device)
    optimizer, scheduler = optimisation(model, cfg, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp(cfg.amp, device))
    return Trainer(
        cfg=cfg,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        objective=_objective(cfg, device),
        device=device,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        processes=processes,
    )


def _resume_state(cfg: TrainStudentConfig, world_size: int, cache: dict | None) -> dict | None:
    """The checkpoint to continue from, or None for a fresh run; refuses to clobber a run, or to
    continue one with other options or another teacher ``cache`` (its identity).

    ``--resume auto`` continues when last.pt exists and starts otherwise, so the same command
    serves a first start and every restart (``torchrun --max-restarts``).
    """
    last = cfg.out / "last.pt"
    if not cfg.resume or (cfg.resume == "auto" and not last.exists()):
        if last.exists():
            raise ConfigError(
                f"{cfg.out} already holds a run; pass --resume (or --resume auto) to continue it or choose another --out"
            )
        return None
    if not last.exists():
        raise ConfigError(f"--resume: {cfg.out} holds no last.pt to continue from; start without --resume")
    state = load_checkpoint(last)
    ours = config_dict(cfg) | {"global_batch": world_size * cfg.batch_size * cfg.accumulate}
    # Checkpoints from before multi-process training: one process, no accumulation.
    theirs = state["config"] | {"global_batch": state.get("global_batch", state["config"].get("batch_size"))}
    differences = [f"{k} {theirs.get(k)!r} -> {ours[k]!r}" for k in RESUME_KEYS if theirs.get(k) != ours[k]]
    if differences:
        raise ConfigError(
            f"--resume with other options than the run in {cfg.out} ({'; '.join(differences)}); "
            "resume with the same options or choose another --out"
        )
    # Checkpoints of tiekd before the cache identity was recorded carry no "cache" key.
    changed = cache_differences(state["cache"], cache) if "cache" in state else []
    if changed:
        raise ConfigError(
            f"--resume with another teacher cache than the run in {cfg.out} ({'; '.join(changed)}); "
            "pass the --cache the run was started with or choose another --out"
        )
    return state


def make_loader(cfg: TrainStudentConfig, records, cache_ref, trainer: Trainer) -> DataLoader:
    """The training DataLoader, continuing at the trainer's step with the same data order."""
    dataset = get_dataset(cfg.dataset)
    samples = DistillationSamples(
        records,
        cfg.data_root,
        dataset=dataset,
        augment_cfg=AugmentConfig(crop=cfg.crop, rotate_teacher=cfg.dpm_form != "code", random_top=dataset.random_top),
        seed=cfg.seed,
        scale=cfg.scale,
        cache_ref=cache_ref,
        gt_root=cfg.gt_root if needs_gt(cfg.method) else None,
    )
    sampler = EpochSampler(
        len(records),
        cfg.batch_size,
        seed=cfg.seed,
        start_step=trainer.step,
        total_steps=trainer.total_steps,
        accumulate=cfg.accumulate,
        rank=trainer.processes.rank,
        world_size=trainer.processes.world_size,
    )
    return DataLoader(
        samples,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=trainer.device.type == "cuda",
        drop_last=True,
        persistent_workers=cfg.workers > 0,
    )


def prepare(cfg: TrainStudentConfig) -> tuple[list, tuple[str, str, str] | None]:
    """Check options, split, roots and cache before anything is built; returns (records, cache reference)."""
    _check_config(cfg)
    dataset = get_dataset(cfg.dataset)
    records = dataset.read_split(cfg.split)
    if cfg.val_split is not None and not any(r.gt for r in dataset.read_split(cfg.val_split)):
        raise DataError(f"--val-split {cfg.val_split} has no record with GT to validate on")
    roots = {"--data-root": cfg.data_root, "--gt-root": cfg.gt_root}
    roots |= {"--val-data-root": cfg.val_data_root, "--val-gt-root": cfg.val_gt_root}
    for flag, root in roots.items():
        if root is not None:
            dataset.check_root(root, flag=flag)
    cache_ref = None
    if needs_teacher(cfg.method):
        cache_ref = check_cache(
            cfg.cache,
            cfg.teacher,
            cfg.split_name,
            cfg.split,
            records,
            dataset=dataset,
            min_depth=cfg.min_depth,
            max_depth=cfg.max_depth,
        )
    require_writable_folder(cfg.out, flag="--out")
    return records, cache_ref


def run(cfg: TrainStudentConfig) -> TrainSummary:
    """Train (or continue training) a student; returns what the run did. Under torchrun every
    process calls this; they train one model together and rank 0 writes the run directory."""
    records, cache_ref = prepare(cfg)
    cache = cache_identity(cache_ref)
    processes = processes_from_env()
    device = join(processes, resolve_device(cfg.device))
    try:
        state = _resume_state(cfg, processes.world_size, cache)
        trainer = build_trainer(cfg, len(records), device, processes)
        trainer.cache = cache
        if state is not None:
            trainer.load(state, cfg.out / "last.pt")
        trainer.replica = replicate(trainer.model, device, sync_bn=cfg.sync_bn)
        best = dict(state.get("best", {})) if state else {}
        log = _start_log(cfg, trainer, cache_ref, resumed=state is not None) if processes.is_writer else None
        try:
            return train(trainer, cfg, make_loader(cfg, records, cache_ref, trainer), log, best)
        finally:
            if log is not None:
                log.close()
    finally:
        leave()


def _start_log(cfg: TrainStudentConfig, trainer: Trainer, cache_ref, *, resumed: bool) -> RunLog:
    """The writer's run log, with run.json written; partial checkpoints of a killed run removed."""
    for name in CHECKPOINT_NAMES:
        remove_partial_checkpoints(cfg.out, name)
    log = RunLog(cfg.out, resume_step=trainer.step if resumed else None)
    write_rerun_config(cfg.out, cfg)
    log.write_config(
        config_dict(cfg)
        | {
            "device": str(trainer.device),
            "cache": cache_ref and "/".join(cache_ref),
            "cache_identity": trainer.cache,
            "total_steps": trainer.total_steps,
            "dpm_sigma": trainer.objective.sigma,
            "dpm_sigma_source": dpm_sigma(cfg.sigma, cfg.dpm_form, paper_sigma=get_dataset(cfg.dataset).sigma)[1],
            "steps_per_epoch": trainer.steps_per_epoch,
            "processes": trainer.processes.world_size,
            "global_batch": trainer.global_batch,
        }
    )
    return log


def report(summary: TrainSummary) -> str:
    """What the run did, in a line or two; empty in all processes but the writer."""
    if not summary.is_writer:
        return ""
    if summary.steps_taken == 0:
        return f"the run in {summary.out} has already taken its {summary.steps} steps; nothing to train"
    lines = [
        f"trained {summary.steps} steps in {summary.seconds:.1f} s, last loss {summary.last_loss:.4f}; "
        f"checkpoints in {summary.out}"
    ]
    if summary.validation:
        lines.append("validation: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.validation.items()))
    return "\n".join(lines)
