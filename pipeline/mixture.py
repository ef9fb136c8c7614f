"""Several teachers at once: TIE-KD's target as the weighted mixture of the teachers' DPMs.

With teachers t = 1..T of depth D_t and weights w_t (summing to 1), the target distribution of a
pixel is the mixture  P = sum_t w_t DPM(D_t)  (each DPM as TIE-KD builds it, :func:`teacher_dpm`),
the natural extension of the one-teacher target: one teacher of weight 1 gives TIE-KD exactly.
The DPM term is KL(P || DPM_S) and the depth term compares the student's expected depth with
the mixture's: the mean of the mixture of the teachers' Gaussians, sum_t w_t D_t (each DPM is a
Gaussian centred on its teacher's depth, binned), so one teacher's depth term is TIE-KD's too. Dense (B, K, H, W) targets: for the small runs of
a lab's own data, not KITTI-sized batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tiekd.pipeline.dpm import bin_centres, teacher_dpm
from tiekd.pipeline.losses import _masked_mean, ssim


def mixture_target(teacher_depths: torch.Tensor, weights: torch.Tensor, edges: torch.Tensor, *, sigma: float,
                   form: str = "paper") -> torch.Tensor:  # fmt: skip
    """The mixture DPM (B, K, H, W) of teacher depths (B, T, H, W) metres with weights (T,); no gradient."""
    with torch.no_grad():
        weights = weights.to(teacher_depths) / weights.sum()
        return sum(w * teacher_dpm(teacher_depths[:, t : t + 1], edges, sigma, form) for t, w in enumerate(weights))


def mixture_loss_terms(
    student_logits: torch.Tensor,
    teacher_depths: torch.Tensor,
    weights: torch.Tensor,
    edges: torch.Tensor,
    *,
    alpha: float,
    sigma: float,
    form: str = "paper",
    valid: torch.Tensor | None = None,
    scale: float = 10.0,
) -> dict[str, torch.Tensor]:
    """{"total", "dpm", "depth"} of TIE-KD against the teachers' mixture (see the module docstring).

    student_logits (B, K, H, W); teacher_depths (B, T, H, W) metres; ``valid`` (B, 1, H, W) the pixels
    every teacher covers (all when None)."""
    teacher_depths = teacher_depths.detach()
    target = mixture_target(teacher_depths, weights, edges, sigma=sigma, form=form)
    centres = bin_centres(edges).to(target).view(1, -1, 1, 1)
    log_student = F.log_softmax(student_logits.to(target.dtype), dim=1)
    kl = (torch.xlogy(target, target) - target * log_student).sum(1, keepdim=True)
    student_depth = (log_student.exp() * centres).sum(1, keepdim=True)
    shares = (weights / weights.sum()).to(target).view(1, -1, 1, 1)
    target_depth = (shares * teacher_depths.to(target)).sum(1, keepdim=True)
    dpm_term = _masked_mean(kl, valid)
    depth_term = 1 - ssim(student_depth, target_depth, form=form, valid=valid)
    return {"total": scale * (alpha * dpm_term + (1 - alpha) * depth_term), "dpm": dpm_term, "depth": depth_term}
