"""The options of ``tiekd cache-teacher`` (:class:`CacheTeacherConfig`) and their checks.

The config sits below the engine that reads it (:mod:`~tiekd.stages.caching.worker`, the dask
cluster), so the engine imports it without going back up to the command module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from tiekd.data.description import fill_presets
from tiekd.data.own import is_description_file
from tiekd.data.records import Record
from tiekd.data.registry import DEFAULT_DATASET, get_dataset
from tiekd.data.sources.fit import FITS, check_fit
from tiekd.pipeline.errors import ConfigError
from tiekd.pipeline.store.cache import FRAMES_PER_SHARD
from tiekd.pipeline.store.formats import STORE_FORMAT, check_group_name, split_group_name
from tiekd.pipeline.teachers.align import TEACHER_OUTPUTS
from tiekd.stages.runtime import default_workers

MAX_CLIPPED_SHARE = 0.05
"""Share of a frame's pixels that may lie outside [min_depth, max_depth] before the run stops:
a KITTI teacher clips a few far pixels; a map mostly out of range has the wrong units or sign."""
MAX_TEACHER_INPUT_SCALE = 4
"""--teacher-input may be at most this many times the crop in each dimension: larger inputs only
fail to allocate (a 100000x100000 batch would need terabytes)."""


@dataclass
class CacheTeacherConfig:
    """Options of ``tiekd cache-teacher``, one field per flag."""

    teacher: str
    """Teacher spec KIND:TARGET, KIND one of export, torchscript, python, hf, checkpoint, onnx
    (:mod:`tiekd.pipeline.teachers.load`)."""
    data_root: Path | None
    """Root of the split's images (KITTI raw; NYU: the sync folders or the labeled .mat)."""
    split: Path | None
    """Split file, one 'RGB GT|None FOCAL' record a line."""
    out: str
    """Store path or fsspec URL."""
    gt_root: Path | None = None
    """Root of the split's ground-truth depth (KITTI annotated depth; NYU: the sync folders or the .mat); when given,
    every record's GT must exist (checked before the run)."""
    name: str | None = None
    """Teacher group name in the store; default derived from the spec."""
    split_name: str | None = None
    """Split group name in the store; default the split file's stem."""
    teacher_args: dict = field(default_factory=dict)
    """Keyword argument for python: factories and hf: from_pretrained (repeatable)."""
    teacher_input: tuple[int, int] | None = None
    """Resize the crop to HxW for the teacher, and the map back. (H, W); None = run at the crop size."""
    flip_tta: bool = True
    """Average with the flipped-back prediction of the mirrored image."""
    batch_size: int = 4
    """Images per teacher batch."""
    device: str = "auto"
    """Where to compute: auto = cuda when available, else cpu."""
    amp: bool = False
    """float16 autocast on CUDA (ignored on the CPU)."""
    workers: int = field(default_factory=default_workers)
    """DataLoader worker processes that read and decode ahead (0: in this process)."""
    shard: tuple[int, int] = (0, 1)
    """Fill store shards I, I+N, I+2N, ... of the split (N processes). (I, N); (0, 1) = all."""
    overwrite: bool = False
    """Replace an existing teacher/split group made differently."""
    frames_per_shard: int = FRAMES_PER_SHARD
    """Frames per shard file of a new store group (a resumed group keeps its own)."""
    store_format: int = STORE_FORMAT
    """Store format of a new group (a resumed group keeps its own): 4 = 2-D predictor with byte planes (smallest,
    fastest reads); 3 and 2 (2-D predictor, row delta) for readers with a tiekd older than format 4."""
    dataset: str = DEFAULT_DATASET
    """Dataset layout and protocol (kitti, nyu, or a description file PATH.yaml); crops, depth range, bins and
    sigma follow it unless given."""
    crop: tuple[int, int] | None = None
    """(H, W) of the region the teacher runs on; None = the dataset's cache crop (KITTI: KB crop).
    Not a flag: the dataset's, set here by library callers (benchmarks)."""
    min_depth: float | None = None
    """Smallest depth stored (metres); None = the dataset's. Not a flag, as ``crop``."""
    max_depth: float | None = None
    """Largest depth stored (metres); None = the dataset's. Not a flag, as ``crop``."""
    cluster: str | None = None
    """Run on dask: N local worker processes (one per GPU), or join a running scheduler.
    ``local:N`` or a scheduler's ``tcp://HOST:PORT``; None = this process alone."""
    with_inputs: bool = False
    """Also pack the split's images (and GT, with --gt-root) into the store, as `tiekd cache pack` does."""
    max_clipped_share: float = MAX_CLIPPED_SHARE
    """Stop when more than this share of a frame's pixels lies outside the dataset's depth range."""
    images: tuple[str, ...] = ()
    """Images instead of a split: a folder (recursive), a glob, a list file or a video (repeatable)."""
    every: int = 1
    """Take every N-th frame of a video."""
    start: float = 0.0
    """Take video frames from this time (seconds)."""
    end: float | None = None
    """Take video frames before this time (seconds) [default: to the end]."""
    teacher_output: str = "metric"
    """What the teacher predicts: metric depth, or depth / inverse depth (disparity) up to scale and shift, aligned
    per frame to --gt-root's GT or --align-to's maps."""
    align_to: str | None = None
    """A metric teacher's group of the same frames that a relative teacher is aligned to where a frame has no GT.
    STORE/TEACHER/SPLIT."""
    test_split: Path | None = None
    """Evaluation split whose images must not be trained on (the leakage guard): same content, same path, or for
    KITTI the same drive."""
    test_data_root: Path | None = None
    """Images of --test-split [default: --data-root]."""
    allow_leakage: bool = False
    """Use frames the leakage guard finds in --test-split anyway (recorded with the store or run)."""
    fit: str = "whole"
    """How an image becomes a map of the dataset's size: whole (resized, refused if its shape differs) or crop (the
    largest region of the map's shape, placed as the dataset's crop, resized)."""

    def __post_init__(self):
        description = get_dataset(self.dataset)
        # Here --crop is the region the teacher sees, not the training crop of the presets.
        if self.crop is None:
            self.crop = description.cache_crop
        fill_presets(self, description)


def check_inputs(cfg: CacheTeacherConfig, records: list[Record]) -> None:
    """Fail before any work (and before the store is touched) on missing roots or files."""
    check_group_name(cfg.name, flag="--name")
    check_group_name(cfg.split_name, flag="--split-name")
    if cfg.images:
        _check_sources(cfg, records)
    else:
        check_split_files(cfg, records)
    _check_teacher_input(cfg)
    index, count = cfg.shard
    if not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: expected I/N with 0 <= I < N")
    if cfg.overwrite and count > 1:
        raise ConfigError(
            "--overwrite with --shard would let every process delete the others' work; "
            "overwrite once with a single process, then start the shards"
        )


def check_frame_options(cfg: CacheTeacherConfig) -> None:
    """Refuse a run given both or neither of --split and --images, before anything is read."""
    if bool(cfg.images) == (cfg.split is not None):
        raise ConfigError("give either --split (with --data-root) or --images, not both or neither")
    if cfg.split is not None and cfg.data_root is None:
        raise ConfigError("--split needs --data-root, the folder its image paths are relative to")
    if cfg.every < 1 or cfg.start < 0 or (cfg.end is not None and cfg.end <= cfg.start):
        raise ConfigError(f"--every {cfg.every} must be >= 1 and 0 <= --start {cfg.start} < --end {cfg.end}")
    if cfg.fit not in FITS:
        raise ConfigError(f"--fit {cfg.fit!r} is not one of {', '.join(FITS)}")
    _check_alignment(cfg)


def _check_alignment(cfg: CacheTeacherConfig) -> None:
    """Refuse a relative teacher without a metric reference, and a reference for a metric one."""
    if cfg.teacher_output not in TEACHER_OUTPUTS:
        raise ConfigError(f"--teacher-output {cfg.teacher_output!r} is not one of {', '.join(TEACHER_OUTPUTS)}")
    relative = cfg.teacher_output != "metric"
    if relative and cfg.align_to is None and (cfg.gt_root is None or cfg.images):
        raise ConfigError(
            f"--teacher-output {cfg.teacher_output}: TIE-KD needs metric maps; give a metric reference to align each "
            "frame to: --gt-root (the split's GT) or --align-to STORE/TEACHER/SPLIT (a metric teacher's group of "
            "the same frames)"
        )
    if not relative and cfg.align_to:
        raise ConfigError("--align-to aligns a relative teacher; pass --teacher-output relative-inverse or relative-depth")


def _check_sources(cfg: CacheTeacherConfig, frames: list) -> None:
    """Refuse before the store is touched: a shape the fit cannot take, options of splits."""
    for frame in frames:
        check_fit(frame.size, cfg.crop, fit=cfg.fit, what=frame.id)
    if cfg.gt_root is not None:
        raise ConfigError("--gt-root belongs to --split; image sources carry no GT")


def check_split_files(cfg, records: list[Record]) -> None:
    """Refuse, before any work, a missing --data-root / --gt-root or a split record whose image
    (or GT, where --gt-root is given) is not there. ``cfg``: any config with dataset, data_root, gt_root."""
    dataset = get_dataset(cfg.dataset)
    data_root = dataset.check_root(cfg.data_root, flag="--data-root")
    for record in records:
        dataset.check_image(data_root, record)
    if cfg.gt_root is not None:
        gt_root = dataset.check_root(cfg.gt_root, flag="--gt-root")
        for record in records:
            dataset.check_gt(gt_root, record)


def _check_teacher_input(cfg: CacheTeacherConfig) -> None:
    """Refuse a --teacher-input far larger than the crop: it would only fail to allocate."""
    if cfg.teacher_input is None:
        return
    limit = tuple(MAX_TEACHER_INPUT_SCALE * side for side in cfg.crop)
    if any(size > most for size, most in zip(cfg.teacher_input, limit)):
        height, width = cfg.teacher_input
        raise ConfigError(
            f"--teacher-input {height}x{width} is larger than {MAX_TEACHER_INPUT_SCALE}x the "
            f"{cfg.crop[0]}x{cfg.crop[1]} crop ({limit[0]}x{limit[1]}); choose the size the teacher was trained at"
        )


def absolute(cfg: CacheTeacherConfig) -> CacheTeacherConfig:
    """Paths that mean the same on a worker whose working directory differs."""
    local_out = "://" not in cfg.out
    return dataclasses.replace(
        cfg,
        data_root=cfg.data_root.resolve() if cfg.data_root else None,
        split=Path(cfg.split).resolve() if cfg.split else None,
        split_name=cfg.split_name or (split_group_name(cfg.split) if cfg.split else None),
        gt_root=cfg.gt_root.resolve() if cfg.gt_root else None,
        out=str(Path(cfg.out).resolve()) if local_out else cfg.out,
        align_to=str(Path(cfg.align_to).resolve()) if cfg.align_to and "://" not in cfg.align_to else cfg.align_to,
        dataset=str(Path(cfg.dataset).resolve()) if is_description_file(cfg.dataset) else cfg.dataset,
    )
