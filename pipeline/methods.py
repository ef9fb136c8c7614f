"""Training methods: TIE-KD, the response-KD baselines and the supervised baseline.

A method fixes the student's head, what a batch must carry (teacher depth, GT) and the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tiekd.pipeline.errors import ConfigError, TrainingError
from tiekd.pipeline.losses import (
    RELEASED_ABLATION_SCALE,
    RESPONSE_LOSSES,
    TIEKD_ALPHA,
    TIEKD_SCALE,
    response_loss,
    supervised_si_loss,
    tiekd_loss_terms,
)
from tiekd.pipeline.mixture import mixture_loss_terms

METHODS = ("tiekd", *RESPONSE_LOSSES, "supervised")
"""Method names in the order the paper's tables list them."""


def head_for(method: str) -> str:
    """TIE-KD trains a DPM head; the baselines regress depth directly (method.md section 4)."""
    return "dpm" if method == "tiekd" else "regression"


def needs_teacher(method: str) -> bool:
    return method != "supervised"


def needs_gt(method: str) -> bool:
    return method == "supervised"


def loss_scale(scale: float | None, method: str, *, form: str, alpha: float) -> tuple[float, str]:
    """The factor on a run's whole loss, and why: an explicit ``scale`` wins; otherwise TIE-KD's 10
    (:data:`TIEKD_SCALE`) except the code form's single-term ablations (alpha 0 or 1), which have
    none as released (:data:`RELEASED_ABLATION_SCALE`); 1 for the other methods."""
    if scale is not None:
        return float(scale), "given explicitly (--loss-scale or the --config file)"
    if method != "tiekd":
        return 1.0, "the method's loss as written"
    if form == "code" and alpha in (0, 1):
        return RELEASED_ABLATION_SCALE, "code form, single-term ablation: the released loss has no x10"
    return TIEKD_SCALE, "TIE-KD's x10"


MIN_GT_PIXELS = 2
"""The SI loss's unbiased variance needs two GT pixels in a batch; with fewer it is NaN."""


def _require_gt(gt: torch.Tensor) -> None:
    """Refuse a supervised batch whose crops hold (almost) no GT: its loss would be NaN."""
    if int((gt > 0).sum()) < MIN_GT_PIXELS:
        raise TrainingError(
            f"the training crop ({gt.shape[-2]}x{gt.shape[-1]} at training scale) of every image in this batch "
            "holds no GT depth (no pixel with GT > 0): use a --crop that reaches the rows with LiDAR, "
            "or check --gt-root and the split's GT paths"
        )


@dataclass(frozen=True)
class Objective:
    """Everything the loss of one method needs besides the batch."""

    method: str
    edges: torch.Tensor | None = None
    """Bin edges (K+1,) metres, for TIE-KD."""
    alpha: float = TIEKD_ALPHA
    """Weight of the DPM term against the depth term in TIE-KD."""
    sigma: float | None = None
    """Std (metres) of the teacher DPM's Gaussian, for TIE-KD (the dataset's, see
    :func:`tiekd.pipeline.dpm.dpm_sigma`)."""
    dpm_form: str = "paper"
    """'paper' (CDF mass per bin, plain float64 SSIM) or 'code' (the released code: softmax of
    densities, abs() float32 SSIM; the response-KD losses take the SSIM form too)."""
    scale: float | None = None
    """Factor on the whole loss; None = :func:`loss_scale`'s default for the method, form and alpha."""
    top_row: int = 0
    """First row of the crop the TIE-KD loss sees (KITTI: 110; the sky above has no LiDAR). The
    response-KD baselines use the whole crop, as the authors' do."""
    mixture_weights: tuple[float, ...] | None = None
    """TIE-KD from several teachers (batch keys ``teacher``, ``teacher_1``, ...): their weights in the
    target's mixture of DPMs (:mod:`tiekd.pipeline.mixture`); None = one teacher."""

    def __post_init__(self):
        if self.method == "tiekd" and (self.edges is None or self.sigma is None):
            raise ConfigError("the TIE-KD objective needs the bin edges and the DPM sigma of the dataset")

    def _mixture_loss(self, output: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """TIE-KD against the weighted mixture of the batch's teachers' DPMs."""
        keys = ["teacher"] + [f"teacher_{k}" for k in range(1, len(self.mixture_weights))]
        teachers = torch.cat([batch[key] for key in keys], dim=1)[..., self.top_row :, :]
        output = output[..., self.top_row :, :]
        terms = mixture_loss_terms(
            output, teachers, torch.tensor(self.mixture_weights, dtype=torch.float64), self.edges, alpha=self.alpha,
            sigma=self.sigma, form=self.dpm_form, valid=(teachers > 0).all(1, keepdim=True), scale=self.total_scale,
        )  # fmt: skip
        return terms["total"], {k: float(v.detach()) for k, v in terms.items() if k != "total"}

    @property
    def total_scale(self) -> float:
        """The factor the loss is multiplied by (:func:`loss_scale`)."""
        return loss_scale(self.scale, self.method, form=self.dpm_form, alpha=self.alpha)[0]

    def loss(self, output: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, terms for logging) for the student's output on a batch.

        ``output`` is the student's forward: logits (B, K, H, W) for TIE-KD, depth (B, 1, H, W)
        otherwise. ``batch["teacher"]`` and ``batch["gt"]`` are depth (B, 1, H, W) metres, 0 = none.
        """
        if self.method == "supervised":
            _require_gt(batch["gt"])
            si = supervised_si_loss(output, batch["gt"])
            return self.total_scale * si, {"si": float(si.detach())}
        teacher = batch["teacher"]
        if self.method == "tiekd" and self.mixture_weights:
            return self._mixture_loss(output, batch)
        if self.method == "tiekd":
            teacher, output = teacher[..., self.top_row :, :], output[..., self.top_row :, :]
            terms = tiekd_loss_terms(
                output,
                teacher,
                self.edges,
                alpha=self.alpha,
                sigma=self.sigma,
                form=self.dpm_form,
                valid=teacher > 0,
                scale=self.total_scale,
            )
            return terms["total"], {k: float(v.detach()) for k, v in terms.items() if k != "total"}
        loss = response_loss(self.method, output, teacher, valid=teacher > 0, form=self.dpm_form)
        return self.total_scale * loss, {}
