"""``tiekd demo``: the whole pipeline on the embedded sample, with a comparison table and pictures.

No KITTI and no pretrained weights can be downloaded, so the demo makes its own world: the
procedural sample data, and a teacher it trains on the sample's dense GT. Then, with the very
stages a user runs on KITTI (at a reduced resolution and length): cache the teacher, distil
MobileNetV2 students by TIE-KD and by response KD, train the supervised baseline on the sparse
GT, evaluate all under one protocol. The teacher pass packs the splits' images and GT into the
store (``--with-inputs``), and the students and the evaluation read them from there, as a lab
node without the dataset's files would. Every step reuses what an earlier run already finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from tiekd.data.registry import get_dataset
from tiekd.pipeline.checkpoint import load_checkpoint
from tiekd.pipeline.files import require_writable_folder, writing_to
from tiekd.stages import cache_teacher, evaluate, train_student
from tiekd.stages.demo_report import method_label, write_pictures, write_results
from tiekd.stages.runtime import default_workers, reproducible, resolve_device
from tiekd.stages.training.config import TrainStudentConfig
from tiekd.stages.training.log import read_jsonl


@dataclass(frozen=True)
class DemoSize:
    """How big the demo's world and runs are."""

    n_train: int
    n_test: int
    scale: float
    """Resolution factor for training and for running the students and the teacher."""
    batch_size: int
    teacher_steps: int
    student_steps: int
    teacher_encoder: str
    """Larger than the student where the machine allows (ResNet-34, 25.5 M parameters, in the default)."""
    student_encoder: str = "mobilenetv2"


FULL = DemoSize(
    n_train=32, n_test=8, scale=0.125, batch_size=4, teacher_steps=250, student_steps=120, teacher_encoder="resnet34"
)
QUICK = DemoSize(
    n_train=8, n_test=3, scale=0.0625, batch_size=2, teacher_steps=4, student_steps=3, teacher_encoder="mobilenetv2"
)
"""A smoke run of every step (the test suite runs it); its numbers mean nothing."""
STUDENT_METHODS = ("tiekd", "res-ssim", "supervised")
"""TIE-KD (paper form), the best response-KD baseline of the paper, and the supervised baseline."""


@dataclass
class DemoConfig:
    """Options of ``tiekd demo``."""

    out: Path = Path("tiekd-demo")
    """Folder of the demo's data, runs and results."""
    quick: bool = False
    """About a minute: fewer frames, lower resolution, a few steps."""
    steps: int | None = None
    """Training steps of each student (default from the demo size)."""
    device: str = "auto"
    """Where to compute: auto = cuda when available, else cpu."""
    workers: int = field(default_factory=default_workers)
    """DataLoader workers of every stage. Not a flag: the machine's default."""
    seed: int = 0
    """Seed of the sample data and every run. Not a flag: the demo's figures are for seed 0."""
    threads: int = 1
    """Not a flag of the command: ``tiekd --threads``. Torch CPU threads: the figures repeat exactly only at one count
    (README). One thread also keeps the demo's pace beside another busy process."""
    dataset: str = "kitti"
    """Dataset layout and protocol (kitti, nyu, or a description file PATH.yaml); crops, depth range, bins and
    sigma follow it unless given."""


def _say(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


def _sample(cfg: DemoConfig, size: DemoSize):
    dataset = get_dataset(cfg.dataset)
    folder = cfg.out / "data"
    _say(f"1/6 sample data ({dataset.title} layout): {size.n_train} train, {size.n_test} test frames in {folder}")
    paths = dataset.sample_paths(folder)
    splits = paths.train_split, paths.test_split
    # The generator writes the split files last: both present with the right lengths = done.
    if all(p.exists() for p in splits) and [len(dataset.read_split(p)) for p in splits] == [size.n_train, size.n_test]:
        click.echo("already there, reused")
        return paths
    return dataset.write_sample(folder, n_train=size.n_train, n_test=size.n_test, seed=cfg.seed)


def _train(cfg: DemoConfig, size: DemoSize, out: Path, **options) -> None:
    """Train one run, finish it if an earlier demo was interrupted, or reuse it if done."""
    last = out / "last.pt"
    steps = options.pop("max_steps")
    if last.exists():
        state = load_checkpoint(last)
        if state["step"] >= steps:
            click.echo(f"{out} already trained ({state['step']} steps), reused")
            return
    run_cfg = TrainStudentConfig(
        out=out,
        max_steps=steps,
        epochs=10_000,
        scale=size.scale,
        batch_size=size.batch_size,
        pretrained=False,
        resume=last.exists(),
        device=cfg.device,
        workers=cfg.workers,
        seed=cfg.seed,
        save_every=50,
        dataset=cfg.dataset,
        **options,
    )
    click.echo(train_student.report(train_student.run(run_cfg)))


def _training_seconds(run_dir: Path) -> float:
    """Seconds spent in training steps (data waiting included), from the run's steps.jsonl."""
    return sum(r["step_seconds"] for r in read_jsonl(run_dir / "steps.jsonl"))


def _cache(cfg: DemoConfig, size: DemoSize, sample, teacher_ckpt: Path) -> str:
    store = str(cfg.out / "teacher-cache.zarr")
    height, width = get_dataset(cfg.dataset).cache_crop
    teacher_input = (round(height * size.scale), round(width * size.scale))
    splits = ((sample.train_split, sample.data_root, sample.gt_root),
              (sample.test_split, sample.eval_data_root, sample.eval_gt_root))  # fmt: skip
    for split, data_root, gt_root in splits:
        result = cache_teacher.run(
            cache_teacher.CacheTeacherConfig(
                teacher=f"checkpoint:{teacher_ckpt}",
                data_root=data_root,
                gt_root=gt_root,
                with_inputs=True,
                split=split,
                out=store,
                name="teacher",
                teacher_input=teacher_input,
                device=cfg.device,
                workers=cfg.workers,
                batch_size=size.batch_size,
                dataset=cfg.dataset,
            )
        )
        click.echo(cache_teacher.report(result))
    return store


def _evaluate(cfg: DemoConfig, sample, store: str, **source) -> evaluate.EvaluationResult:
    """Evaluate a checkpoint or the cached teacher on the test split packed in ``store``."""
    result = evaluate.run(
        evaluate.EvaluateConfig(
            data_root=None,
            gt_root=None,
            inputs=store,
            split=sample.test_split,
            device=cfg.device,
            workers=cfg.workers,
            dataset=cfg.dataset,
            **source,
        )
    )
    click.echo(evaluate.format_result(result))
    return result


def _teacher(cfg: DemoConfig, size: DemoSize, sample) -> Path:
    """Step 2: the demo's teacher, a larger network trained on the dense sample GT."""
    _say(f"2/6 teacher: {size.teacher_encoder} trained on the dense sample GT ({size.teacher_steps} steps)")
    teacher_dir = cfg.out / "teacher"
    _train(
        cfg,
        size,
        teacher_dir,
        data_root=sample.data_root,
        gt_root=sample.dense_gt_root,
        split=sample.train_split,
        student=size.teacher_encoder,
        method="supervised",
        max_steps=size.teacher_steps,
    )
    return teacher_dir


def _students(cfg: DemoConfig, size: DemoSize, sample, store: str, steps: int) -> dict[str, Path]:
    """Step 4: one student per method, all from the same cache (the supervised one from sparse GT)."""
    runs = {}
    for i, method in enumerate(STUDENT_METHODS):
        _say(
            f"4/6 student {i + 1}/{len(STUDENT_METHODS)}: {size.student_encoder}, {method_label(method, cfg.dataset)} "
            f"({steps} steps)"
        )
        runs[method] = cfg.out / "students" / method
        _train(
            cfg,
            size,
            runs[method],
            data_root=None,
            inputs=store,
            split=sample.train_split,
            cache=None if method == "supervised" else store,
            teacher="teacher",
            student=size.student_encoder,
            method=method,
            max_steps=steps,
        )
    return runs


def run(cfg: DemoConfig) -> Path:
    """Run (or finish) the demo in ``cfg.out``, as reproducibly as torch allows; returns results.md."""
    require_writable_folder(cfg.out, flag="--out")
    with writing_to(cfg.out), reproducible(cfg.threads, resolve_device(cfg.device)) as settings:
        click.echo(f"settings: {settings} (the figures depend on them)")
        return _run(cfg, settings)


def _run(cfg: DemoConfig, settings: str) -> Path:
    size = QUICK if cfg.quick else FULL
    student_steps = cfg.steps or size.student_steps
    sample = _sample(cfg, size)
    teacher_dir = _teacher(cfg, size, sample)
    _say("3/6 cache-teacher over the train and test splits, packing their images and GT beside the maps")
    store = _cache(cfg, size, sample, teacher_dir / "last.pt")
    runs = _students(cfg, size, sample, store, student_steps)
    _say("5/6 evaluate the teacher (from its cache) and every student, one protocol")
    results = {"teacher": _evaluate(cfg, sample, store, cache=store, teacher="teacher")}
    for method, run_dir in runs.items():
        results[method] = _evaluate(cfg, sample, store, checkpoint=run_dir / "last.pt")
    _say("6/6 table and pictures")
    runs = {"teacher": teacher_dir, **runs}
    checkpoints = {name: run_dir / "last.pt" for name, run_dir in runs.items()}
    picture = write_pictures(
        cfg.out / "comparison.png",
        sample=sample,
        store=store,
        checkpoints=checkpoints,
        device=cfg.device,
        dataset=cfg.dataset,
    )
    path = write_results(
        cfg.out / "results.md",
        results=results,
        checkpoints=checkpoints,
        picture=picture,
        size=size,
        seconds={name: _training_seconds(run_dir) for name, run_dir in runs.items()},
        student_steps=student_steps,
        settings=settings,
        dataset=cfg.dataset,
    )
    click.echo(path.read_text())
    return path
