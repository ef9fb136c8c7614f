"""Stage two, ``tiekd train-student``: train a student from the teacher cache.

The teacher never runs here: its maps come from the store, the DPM is built from them inside
the loss on the training device. A run directory holds ``run.json`` (resolved options),
``steps.jsonl`` and ``epochs.jsonl`` (metrics), ``last.pt`` and, with a validation split,
``best.pt`` (lowest validation RMSE; weights, architecture and config, without the optimizer
state that only ``--resume`` reads from ``last.pt``).
"""

from __future__ import annotations

import contextlib

import click
import torch
from torch.utils.data import DataLoader

from tiekd.data.augment import AugmentConfig
from tiekd.data.datasets import DistillationSamples
from tiekd.data.registry import get_dataset
from tiekd.data.sources.samples import SourceSamples
from tiekd.pipeline.checkpoint import load_checkpoint, remove_partial_checkpoints
from tiekd.pipeline.dpm import bin_edges, dpm_sigma
from tiekd.pipeline.errors import ConfigError, DataError
from tiekd.pipeline.files import require_writable_folder
from tiekd.pipeline.methods import Objective, head_for, loss_scale, needs_gt, needs_teacher
from tiekd.pipeline.store.cache import TeacherCache
from tiekd.pipeline.students import build_student
from tiekd.stages.config_file import write_rerun_config
from tiekd.stages.leakage import leakage_guard
from tiekd.stages.packed_inputs import checked_source, packed_source, packed_store
from tiekd.stages.runtime import AUTOCAST_DTYPES, autocast_dtype, resolve_device
from tiekd.stages.training.config import (
    RESUME_KEYS,
    TrainStudentConfig,
    check_config,
    mixture_weights,
    with_earlier_defaults,
)
from tiekd.stages.training.distributed import SINGLE, Processes, join, leave, processes_from_env, replicate
from tiekd.stages.training.identity import cache_differences, cache_identity, read_groups
from tiekd.stages.training.log import RunLog, forget_run_locks, one_run
from tiekd.stages.training.loop import TrainSummary, train
from tiekd.stages.training.mixture import mixed_epoch_frames, mixed_loader_parts, unlabelled_sets
from tiekd.stages.training.sampler import EpochSampler, check_cache, seed_everything
from tiekd.stages.training.sources import (
    check_same_frames,
    group_frames,
    source_packed,
    start_architecture_weights,
    start_from_checkpoint,
)
from tiekd.stages.training.trainer import Trainer, config_dict, optimisation

PREFETCH_BATCHES = 4
"""Batches each DataLoader worker prepares ahead (torch's default is 2): a step that waits on one slow
frame (a cold shard, a large PNG) finds the others' batches ready."""
AUTOCAST_NAMES = {dtype: name for name, dtype in AUTOCAST_DTYPES.items()}
"""run.json's ``amp``: the --amp value of the dtype that ran (None: float32)."""

CHECKPOINT_NAMES = ("last.pt", "best.pt")
"""Checkpoints of a run directory; a kill mid-write leaves their temporaries, removed on the next start."""


def run_sigma(cfg: TrainStudentConfig) -> tuple[float, str]:
    """The run's teacher DPM sigma (metres) and where it came from (:func:`dpm_sigma`)."""
    return dpm_sigma(cfg.sigma, cfg.dpm_form, paper_sigma=get_dataset(cfg.dataset).sigma, alpha=cfg.alpha)


def build_objective(cfg: TrainStudentConfig, device: torch.device) -> Objective:
    """The loss of ``cfg.method`` with the run's bins, alpha, sigma (:func:`run_sigma`), scale and first loss row."""
    return Objective(
        method=cfg.method,
        edges=bin_edges(cfg.min_depth, cfg.max_depth, cfg.n_bins).to(device),
        alpha=cfg.alpha,
        sigma=run_sigma(cfg)[0],
        dpm_form=cfg.dpm_form,
        scale=cfg.loss_scale,
        top_row=round(cfg.loss_top_row * cfg.scale),
        mixture_weights=tuple(mixture_weights(cfg).values()) or None,
    )


def build_model(cfg: TrainStudentConfig, device: torch.device) -> tuple[torch.nn.Module, dict | None]:
    """The run's student at step 0 (seeded) on ``device``, laid out channels-last with --channels-last,
    and what ``--init-from`` loaded into it (None without)."""
    seed_everything(cfg.seed)
    model = build_student(
        cfg.student,
        head=head_for(cfg.method),
        n_bins=cfg.n_bins,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        pretrained=cfg.pretrained and cfg.init_from is None,  # fine-tuning replaces every weight
        decoder=cfg.decoder,
        weights=cfg.weights or start_architecture_weights(cfg.init_from),
    ).to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    init_from = start_from_checkpoint(model, cfg.init_from) if cfg.init_from else None
    return model, init_from


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
    model, init_from = build_model(cfg, device)
    optimizer, scheduler = optimisation(model, cfg, total_steps)
    autocast = autocast_dtype(cfg.amp, device)
    # bfloat16 has float32's exponent range: its gradients need no loss scaling.
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    return Trainer(
        cfg=cfg,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        autocast=autocast,
        objective=build_objective(cfg, device),
        device=device,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        processes=processes,
        init_from=init_from,
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
    theirs = with_earlier_defaults(state["config"])
    theirs |= {"global_batch": state.get("global_batch", theirs.get("batch_size"))}
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


def augment_config(cfg: TrainStudentConfig) -> AugmentConfig:
    """The training augmentation of a run: its crop, colour form and teacher rotation, the dataset's
    vertical offset and brightness range."""
    dataset = get_dataset(cfg.dataset)
    return AugmentConfig(
        crop=cfg.crop,
        colour_aug=cfg.colour_aug,
        brightness_range=dataset.brightness_range,
        rotate_teacher=cfg.rotate_teacher,
        random_top=dataset.random_top,
    )


def training_samples(cfg: TrainStudentConfig, records, cache_ref) -> DistillationSamples:
    """The run's samples: of the split's records, or of a group of image sources (no --split)."""
    more = tuple((cache_ref[0], name, cache_ref[2]) for name in list(mixture_weights(cfg))[1:])
    common = {"dataset": get_dataset(cfg.dataset), "augment_cfg": augment_config(cfg), "seed": cfg.seed,
              "scale": cfg.scale, "cache_ref": cache_ref, "more_teachers": more}  # fmt: skip
    if cfg.split is None:  # a group of image sources: read packed where the store packs them
        fit = group_frames(TeacherCache.open(*cache_ref))[1]
        return SourceSamples(records, fit=fit, packed=source_packed(cfg, cache_ref, records, fit), **common)
    gt_root = cfg.gt_root if needs_gt(cfg.method) else None
    packed = packed_source(training_store(cfg), cfg.split, cfg.split_name, with_gt=needs_gt(cfg.method))
    return DistillationSamples(records, cfg.data_root, gt_root=gt_root, packed=packed, **common)


def watched_groups(cfg: TrainStudentConfig, cache_ref) -> tuple:
    """The store groups the run reads, as they are now: each teacher of a mixture, each --unlabelled group,
    and the split or image sources packed in a store; the loop refuses to take a step once one of them is
    removed or replaced."""
    refs = [cache_ref, *read_groups(cfg, cache_ref)] if cache_ref else []
    groups = [TeacherCache.open(*ref) for ref in refs]
    packed = [packed_source(training_store(cfg) if cfg.split else None, cfg.split, cfg.split_name, with_gt=False)]
    sources = unlabelled_sets(cfg, cache_ref) if cfg.unlabelled else []
    if cfg.split is None and cache_ref:
        frames, fit = group_frames(TeacherCache.open(*cache_ref))
        sources.append((frames, cache_ref, fit))
    packed += [source_packed(cfg, ref, frames, fit) for frames, ref, fit in sources]
    for source in filter(None, packed):
        source.require_unchanged()
        groups.append(source)
    return tuple(groups)


def make_loader(cfg: TrainStudentConfig, records, cache_ref, trainer: Trainer) -> DataLoader:
    """The training DataLoader, continuing at the trainer's step with the same data order."""
    samples = training_samples(cfg, records, cache_ref)
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
    if cfg.unlabelled:  # several sources, each its share of every batch (stages/training/mixture.py)

        def make_source(frames, ref, fit, seed):
            common = {"dataset": samples.dataset, "augment_cfg": samples.augment_cfg, "scale": cfg.scale}
            packed = source_packed(cfg, ref, frames, fit)
            return SourceSamples(frames, fit=fit, cache_ref=ref, seed=seed, packed=packed, **common)

        samples, sampler = mixed_loader_parts(cfg, samples, cache_ref, trainer, make_source)
    return DataLoader(
        samples,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=trainer.device.type == "cuda",
        drop_last=True,
        persistent_workers=cfg.workers > 0,
        prefetch_factor=PREFETCH_BATCHES if cfg.workers > 0 else None,
        worker_init_fn=forget_run_locks,
    )


def training_store(cfg: TrainStudentConfig) -> str | None:
    """The store the split is read from when --data-root is not given (None: the files)."""
    return packed_store(data_root=cfg.data_root, inputs=cfg.inputs, cache=cfg.cache)


def prepare(cfg: TrainStudentConfig) -> tuple[list, tuple[str, str, str] | None]:
    """Check options, split, roots and cache before anything is built; returns (records, cache reference)."""
    check_config(cfg)
    dataset = get_dataset(cfg.dataset)
    if cfg.split is None:
        records = group_frames(TeacherCache.open(cfg.cache, cfg.teacher, cfg.split_name))[0]
    else:
        records = dataset.read_split(cfg.split)
    cfg.leakage_guard = leakage_guard(cfg, records, what="training frames")
    if cfg.val_split is not None and not any(r.gt for r in dataset.read_split(cfg.val_split)):
        raise DataError(f"--val-split {cfg.val_split} has no record with GT to validate on")
    roots = {"--data-root": cfg.data_root, "--gt-root": cfg.gt_root}
    roots |= {"--val-data-root": cfg.val_data_root, "--val-gt-root": cfg.val_gt_root}
    for flag, root in roots.items():
        if root is not None:
            dataset.check_root(root, flag=flag)
    store = training_store(cfg) if cfg.split is not None else None  # image sources are read from their files
    checked_source(store, cfg.split, cfg.split_name, records, dataset=dataset, with_gt=needs_gt(cfg.method),
                   what="training images")  # fmt: skip
    if cfg.val_split is not None and cfg.val_data_root is None:
        checked_source(store, cfg.val_split, None, dataset.read_split(cfg.val_split), dataset=dataset, with_gt=True,
                       what="validation images")  # fmt: skip
    cache_ref = None
    for teacher in list(mixture_weights(cfg)) or ([cfg.teacher] if needs_teacher(cfg.method) else []):
        ref = check_cache(cfg.cache, teacher, cfg.split_name, cfg.split, records, dataset=dataset,
                          min_depth=cfg.min_depth, max_depth=cfg.max_depth)  # fmt: skip
        check_same_frames(cache_ref, ref)
        cache_ref = cache_ref or ref
    for frames, _, _ in unlabelled_sets(cfg, cache_ref) if cfg.unlabelled else []:
        leakage_guard(cfg, frames, what="unlabelled frames")
    require_writable_folder(cfg.out, flag="--out")
    return records, cache_ref


def run(cfg: TrainStudentConfig) -> TrainSummary:
    """Train (or continue training) a student; returns what the run did. Under torchrun every
    process calls this; they train one model together and rank 0 writes the run directory."""
    records, cache_ref = prepare(cfg)
    processes = processes_from_env()
    # The writer holds the run directory; torchrun's other processes of the run only read it.
    with one_run(cfg.out) if processes.is_writer else contextlib.nullcontext():
        return _run(cfg, records, cache_ref, processes)


def _run(cfg: TrainStudentConfig, records: list, cache_ref, processes: Processes) -> TrainSummary:
    """The run itself, once its records are read and (in the writer) its directory is held."""
    cache = cache_identity(cache_ref, read_groups(cfg, cache_ref))
    device = join(processes, resolve_device(cfg.device))
    try:
        state = _resume_state(cfg, processes.world_size, cache)
        frames = len(records)
        if cfg.unlabelled:
            global_batch = processes.world_size * cfg.batch_size * cfg.accumulate
            frames = mixed_epoch_frames(cfg, len(records), cache_ref, global_batch)
        trainer = build_trainer(cfg, frames, device, processes)
        trainer.cache = cache
        trainer.watched = watched_groups(cfg, cache_ref)
        if processes.is_writer:
            note_global_batch(cfg, trainer.global_batch)
        if state is not None:
            trainer.load(state, cfg.out / "last.pt")
        trainer.replica = replicate(trainer.model, device, sync_bn=cfg.sync_bn, compile=cfg.compile)
        best = dict(state.get("best", {})) if state else {}
        log = _start_log(cfg, trainer, cache_ref, resumed=state is not None) if processes.is_writer else None
        try:
            return train(trainer, cfg, make_loader(cfg, records, cache_ref, trainer), log, best)
        finally:
            if log is not None:
                log.close()
    finally:
        leave()


def note_global_batch(cfg: TrainStudentConfig, global_batch: int) -> None:
    """One line on stderr when the run's global batch is not the one its recipe was trained with."""
    if cfg.recipe_global_batch is not None and global_batch != cfg.recipe_global_batch:
        click.echo(
            f"note: this run's global batch is {global_batch} (processes x --batch-size {cfg.batch_size} x "
            f"--accumulate {cfg.accumulate}), the recipe's {cfg.recipe_global_batch}: the figures it quotes were "
            f"trained with {cfg.recipe_global_batch} (one process: --accumulate "
            f"{max(1, cfg.recipe_global_batch // cfg.batch_size)})",
            err=True,
        )


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
            "amp": AUTOCAST_NAMES.get(trainer.autocast),  # what ran: --amp fp16 works on CUDA only
            "cache": cache_ref and "/".join(cache_ref),
            "cache_identity": trainer.cache,
            "total_steps": trainer.total_steps,
            "dpm_sigma": trainer.objective.sigma,
            "start_weights": trainer.start_weights,
            "init_from": trainer.init_from,
            "brightness_range": augment_config(cfg).brightness_range,
            "dpm_sigma_source": run_sigma(cfg)[1],
            "loss_scale_applied": trainer.objective.total_scale,
            "loss_scale_source": loss_scale(cfg.loss_scale, cfg.method, form=cfg.dpm_form, alpha=cfg.alpha)[1],
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
