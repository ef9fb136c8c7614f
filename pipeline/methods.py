"""Training methods: TIE-KD, the response-KD baselines and the supervised baseline.

A method fixes the student's head, what a batch must carry (teacher depth, GT) and the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tiekd.pipeline.errors import ConfigError, TrainingError
from tiekd.pipeline.losses import RESPONSE_LOSSES, TIEKD_ALPHA, supervised_si_loss, tiekd_loss_terms

METHODS = ("tiekd", *RESPONSE_LOSSES, "supervised")
"""Method names in the order the paper's tables list them."""


def head_for(method: str) -> str:
    """TIE-KD trains a DPM head; the baselines regress depth directly (method.md section 4)."""
    return "dpm" if method == "tiekd" else "regression"


def needs_teacher(method: str) -> bool:
    return method != "supervised"


def needs_gt(method: str) -> bool:
    return method == "supervised"


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
    """'paper' (CDF mass per bin) or 'code' (the released code's softmax of densities)."""
    top_row: int = 0
    """First row of the crop the TIE-KD loss sees (KITTI: 110; the sky above has no LiDAR). The
    response-KD baselines use the whole crop, as the authors' do."""

    def __post_init__(self):
        if self.method == "tiekd" and (self.edges is None or self.sigma is None):
            raise ConfigError("the TIE-KD objective needs the bin edges and the DPM sigma of the dataset")

    def loss(self, output: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, terms for logging) for the student's output on a batch.

        ``output`` is the student's forward: logits (B, K, H, W) for TIE-KD, depth (B, 1, H, W)
        otherwise. ``batch["teacher"]`` and ``batch["gt"]`` are depth (B, 1, H, W) metres, 0 = none.
        """
        if self.method == "supervised":
            _require_gt(batch["gt"])
            loss = supervised_si_loss(output, batch["gt"])
            return loss, {"si": float(loss.detach())}
        teacher = batch["teacher"]
        if self.method == "tiekd":
            teacher, output = teacher[..., self.top_row :, :], output[..., self.top_row :, :]
            terms = tiekd_loss_terms(
                output, teacher, self.edges, alpha=self.alpha, sigma=self.sigma, form=self.dpm_form, valid=teacher > 0
            )
            return terms["total"], {k: float(v.detach()) for k, v in terms.items() if k != "total"}
        return RESPONSE_LOSSES[self.method](output, teacher, valid=teacher > 0), {}
