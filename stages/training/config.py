"""The options of ``tiekd train-student`` (:class:`TrainStudentConfig`) and their checks.

The config sits below the engine that reads it (trainer, loop), so the engine imports it without
going back up to the command module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from tiekd.data.augment import COLOUR_AUGS
from tiekd.data.description import fill_presets
from tiekd.data.registry import DEFAULT_DATASET, get_dataset
from tiekd.pipeline.dpm import DPM_FORMS, MAX_N_BINS
from tiekd.pipeline.errors import ConfigError
from tiekd.pipeline.methods import METHODS, needs_gt, needs_teacher
from tiekd.stages.runtime import AUTOCAST_DTYPES, default_workers


@dataclass
class TrainStudentConfig:
    """Options of ``tiekd train-student``, one field per flag."""

    data_root: Path | None
    """Root of the split's images (KITTI raw; NYU: the sync folders or the labeled .mat). None = read the split and
    --val-split packed in the --inputs (or --cache) store, GT included."""
    split: Path | None
    """Training split file [default: the frames the --cache group was made from, for a group of cache-teacher
    --images]."""
    out: Path
    """Run directory."""
    cache: str | None = None
    """Teacher store: a path or fsspec URL. Required by every method but supervised."""
    teacher: str | None = None
    """Teacher group in the store; optional where it holds one."""
    split_name: str | None = None
    """Split group in the store; default the only one, or the split file's stem."""
    inputs: str | None = None
    """Store holding the split's images and GT packed (tiekd cache pack), read when --data-root is not given
    [default: the --cache store]."""
    gt_root: Path | None = None
    """Root of the split's ground-truth depth (KITTI annotated depth; NYU: the sync folders or the .mat); supervised
    training and validation."""
    student: str = "mobilenetv2"
    """Preset (mobilenetv2, resnet18, resnet50) or any timm encoder name."""
    method: str = "tiekd"
    """Distillation method (tiekd, the response-KD baselines) or supervised training."""
    decoder: str = "standard"
    """Student decoder: the authors' (standard) or light (fewer channels at full resolution)."""
    epochs: int = 24
    """Passes over the split."""
    batch_size: int = 8
    """Samples per process and micro-batch (the paper: 8 per GPU)."""
    accumulate: int = 1
    """Micro-batches accumulated into one step: global batch = processes x batch size x this."""
    sync_bn: bool = False
    """BatchNorm with the statistics of all processes' batches (torchrun runs)."""
    crop: tuple[int, int] | None = None
    """Random training crop taken from the dataset's train region. (H, W); None = the dataset's."""
    scale: float = 1.0
    """Resize crop and maps by this factor (quick experiments at low resolution)."""
    lr: float = 1e-3
    """Maximum learning rate of the one-cycle schedule."""
    alpha: float = 0.1
    """Weight of the DPM term against the depth term in TIE-KD."""
    sigma: float | None = None
    """Std (m) of the teacher DPM [default: paper form the dataset's; code form 0.5, L_DPM only the dataset's, as
    released]."""
    dpm_form: str = "paper"
    """Teacher DPM and SSIM: paper (Gaussian mass per bin, float64 SSIM) or code (the released code's softmax of
    densities, abs() float32 SSIM, also in the response-KD losses)."""
    loss_scale: float | None = None
    """Factor on the whole loss [default: TIE-KD 10, but 1 for the code form's alpha 0 and 1 as released; 1 for the
    other methods]."""
    n_bins: int | None = None
    """DPM bins; None = the dataset's."""
    min_depth: float | None = None
    """Smallest depth (m) of bins and regression head. None = the dataset's."""
    max_depth: float | None = None
    """Largest depth (m) of bins and regression head. None = the dataset's."""
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
    weights: str | None = None
    """timm pretrained tag of the encoder's start weights. None = the preset's (ResNets: torchvision's
    v1 weights resnet18.tv_in1k / resnet50.tv_in1k as the authors; MobileNetV2: mobilenetv2_100.ra_in1k,
    timm's closest to the authors' mmcls weights) or, for any other timm name, timm's default tag.
    Either the full name (resnet18.tv_in1k) or the tag alone (tv_in1k)."""
    colour_aug: str = "bts"
    """Colour augmentation: bts (gamma on [0, 1], BTS) or released (gamma on 0..255 as the authors' code,
    which brightens and saturates). The -paper recipes use bts, the -code recipes released
    (data/augment.py)."""
    rotate_teacher: bool | None = None
    """Rotate the teacher map with the image (the released runs never do). None = yes, but no with
    --dpm-form code."""
    resume: bool | str = False
    """Continue the run in --out from last.pt; auto: continue it if it has a last.pt, else start it (torchrun
    restarts)."""
    device: str = "auto"
    """Where to compute: auto = cuda when available, else cpu."""
    amp: str | None = None
    """Autocast: fp16 (float16 with loss scaling; CUDA only, ignored on the CPU) or bf16 (bfloat16, no loss
    scaling; CUDA and the CPU); --amp alone is fp16. None = float32. run.json's ``amp`` says what ran. A config
    file's ``amp: true`` (runs before bf16) is fp16."""
    channels_last: bool = False
    """Lay the student's weights and the input images out channels-last (NHWC), the layout cuDNN's and oneDNN's
    convolutions often run fastest in; the same numbers within float tolerance."""
    compile: bool = False
    """Compile the student's training step with torch.compile (TorchInductor): a slow first step (minutes on a CPU,
    a C++ compiler needed there), faster steps after; the same numbers within float tolerance."""
    workers: int = field(default_factory=default_workers)
    """DataLoader worker processes that read and decode ahead (0: in this process)."""
    seed: int = 0
    """Seed of the weights, the data order and the augmentation."""
    save_every: int = 500
    """Also write last.pt every this many steps (and at every epoch end)."""
    dataset: str = DEFAULT_DATASET
    """Dataset layout and protocol (kitti, nyu, or a description file PATH.yaml); crops, depth range, bins and
    sigma follow it unless given."""
    recipe_global_batch: int | None = None
    """Global batch the recipe's figures were trained with (the authors: 2 GPUs x 8 = 16); a run whose processes x
    batch size x accumulate differ says so at start."""
    test_split: Path | None = None
    """Evaluation split whose images must not be trained on (the leakage guard): same content, same path, or for
    KITTI the same drive."""
    test_data_root: Path | None = None
    """Images of --test-split [default: --data-root]."""
    allow_leakage: bool = False
    """Use frames the leakage guard finds in --test-split anyway (recorded with the store or run)."""
    leakage_guard: dict | None = None
    """Not a flag: what the leakage guard checked and found (set by the stage), written to run.json."""
    unlabelled: tuple[str, ...] = ()
    """Also train on a group of image sources of --cache (the run's teacher), GROUP=SHARE of every global batch
    (repeatable); the split takes the rest."""
    teacher_mix: tuple[str, ...] = ()
    """Distil from several teacher groups of the same frames, TEACHER=WEIGHT each (repeatable, instead of --teacher):
    the target DPM is their weighted mixture."""
    init_from: Path | None = None
    """Start from the weights of a tiekd student checkpoint and fine-tune them (a fresh optimiser and schedule)."""
    option_sources: dict[str, str] = field(default_factory=dict)
    """Not a flag: where each option's value came from (command line, the --config file, default, the dataset),
    recorded in run.json."""

    def __post_init__(self):
        description = get_dataset(self.dataset)
        from_dataset = [f.name for f in fields(self) if getattr(self, f.name) is None]
        if self.crop is None:
            self.crop = description.train_crop
        self.amp = {True: "fp16", False: None}.get(self.amp, self.amp)  # the flag --amp was before bf16
        if self.rotate_teacher is None:
            self.rotate_teacher = self.dpm_form != "code"
        fill_presets(self, description)
        for name in from_dataset:
            if getattr(self, name) is not None:
                self.option_sources[name] = f"dataset {self.dataset}"
        if "rotate_teacher" in from_dataset:
            self.option_sources["rotate_teacher"] = f"default of --dpm-form {self.dpm_form}"


def check_config(cfg: TrainStudentConfig) -> None:
    """Refuse options that contradict each other or the dataset, before anything is read or built."""
    if cfg.method not in METHODS:
        raise ConfigError(f"--method {cfg.method!r} is not one of {', '.join(METHODS)}")
    if needs_teacher(cfg.method) and cfg.cache is None:
        raise ConfigError(f"--method {cfg.method} distils from a teacher: pass --cache STORE")
    _check_sources(cfg)
    wants_gt = needs_gt(cfg.method) or (cfg.val_split and cfg.val_gt_root is None)
    if wants_gt and cfg.gt_root is None and cfg.data_root is not None:  # without it the packed GT is read
        raise ConfigError(f"--method {cfg.method}{' with --val-split' if cfg.val_split else ''} needs --gt-root")
    if cfg.resume not in (False, True, "auto"):
        raise ConfigError(f"--resume {cfg.resume!r} is not one of yes, auto (or leave it out)")
    if cfg.amp not in (None, *AUTOCAST_DTYPES):
        raise ConfigError(f"--amp {cfg.amp!r} is not one of {', '.join(AUTOCAST_DTYPES)} (or leave it out)")
    if cfg.accumulate < 1:
        raise ConfigError(f"--accumulate {cfg.accumulate} must be at least 1")
    if not 0 < cfg.scale <= 1:
        raise ConfigError(f"--scale {cfg.scale} must be in (0, 1]")
    if cfg.colour_aug not in COLOUR_AUGS:
        raise ConfigError(f"--colour-aug {cfg.colour_aug!r} is not one of {', '.join(COLOUR_AUGS)}")
    if cfg.weights is not None and not cfg.pretrained:
        raise ConfigError(f"--weights {cfg.weights} names start weights, but --no-pretrained starts from none")
    dataset = get_dataset(cfg.dataset)
    if cfg.crop[0] > dataset.train_size[0] or cfg.crop[1] > dataset.train_size[1]:
        raise ConfigError(f"--crop {cfg.crop[0]}x{cfg.crop[1]} is larger than the {dataset.train_region_title}")
    _check_loss_options(cfg)


def _check_sources(cfg: TrainStudentConfig) -> None:
    """Refuse a run without a split that needs GT, and malformed teacher mixtures or unlabelled groups."""
    if cfg.split is None and (cfg.cache is None or needs_gt(cfg.method)):
        raise ConfigError(
            f"--method {cfg.method} without --split trains on a --cache group of image sources, which has no GT; "
            "pass --split (and --data-root), or a distillation method with --cache"
        )
    if cfg.teacher_mix:
        _check_mixture(cfg)
    if cfg.unlabelled and (
        cfg.split is None or not needs_teacher(cfg.method) or cfg.teacher_mix or needs_gt(cfg.method)
    ):
        raise ConfigError(
            "--unlabelled adds groups of image sources to a --split for a distillation method with one --teacher"
        )


def mixture_weights(cfg: TrainStudentConfig) -> dict[str, float]:
    """--teacher-mix as teacher group -> weight, in the order given; ConfigError for a malformed one."""
    weights = {}
    for text in cfg.teacher_mix:
        name, _, weight = text.partition("=")
        try:
            weights[name] = float(weight)
        except ValueError:
            raise ConfigError(f"--teacher-mix {text!r} is not TEACHER=WEIGHT, e.g. zoedepth=0.5") from None
        if not 0 < weights[name] < math.inf:
            raise ConfigError(f"--teacher-mix {text!r}: a weight must be a positive finite number")
    if not sum(weights.values()) < math.inf:
        raise ConfigError(f"--teacher-mix weights {', '.join(cfg.teacher_mix)} sum to more than a float holds; "
                          "scale them down (only their ratios matter)")  # fmt: skip
    return weights


def _check_mixture(cfg: TrainStudentConfig) -> None:
    """Refuse a mixture outside TIE-KD, of one teacher, or beside --teacher."""
    if cfg.method != "tiekd" or cfg.teacher is not None or len(mixture_weights(cfg)) < 2:
        raise ConfigError(
            "--teacher-mix takes two or more different teacher groups (TEACHER=WEIGHT) for --method tiekd, "
            "instead of --teacher"
        )
    if not cfg.rotate_teacher:
        raise ConfigError("--teacher-mix rotates every teacher map with the image; leave out --no-rotate-teacher")


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
    if cfg.loss_scale is not None and not cfg.loss_scale > 0:
        raise ConfigError(f"--loss-scale {cfg.loss_scale} must be positive")
    if not cfg.lr > 0:
        raise ConfigError(f"--lr {cfg.lr} must be positive")
    if not 0 < cfg.min_depth < cfg.max_depth:
        raise ConfigError(f"--max-depth {cfg.max_depth} must be above the minimum depth {cfg.min_depth} m")
    if cfg.method == "tiekd" and not 0 <= cfg.loss_top_row < cfg.crop[0]:  # only TIE-KD's loss skips top rows
        from_dataset = cfg.option_sources.get("loss_top_row", "").startswith("dataset")
        what = f"--loss-top-row {cfg.loss_top_row}"
        if from_dataset:
            what = f"the {cfg.dataset} loss top row {cfg.loss_top_row} (its default --loss-top-row: no LiDAR above it)"
        raise ConfigError(f"{what} must be a row of the {cfg.crop[0]}-row --crop; use a taller --crop or a lower --loss-top-row")


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
    "loss_scale",
    "loss_top_row",
    "colour_aug",
    "rotate_teacher",
    "weights",
    "init_from",
    "teacher_mix",
    "unlabelled",
)
"""Options a resumed run must share with the run it continues (same steps, data order and schedule).
The global batch may be split differently: other processes, --batch-size or --accumulate. Checkpoints
written before a key existed are compared with the value their runs had (:func:`with_earlier_defaults`)."""


def with_earlier_defaults(config: dict) -> dict:
    """A checkpoint's config with the values runs had before tiekd recorded a key: BTS's colour
    augmentation, the preset's start weights, the teacher map rotated except in the code form."""
    earlier = {
        "colour_aug": "bts",
        "weights": None,
        "rotate_teacher": config.get("dpm_form") != "code",
        "init_from": None,
        "teacher_mix": [],
        "unlabelled": [],
    }
    return earlier | config
