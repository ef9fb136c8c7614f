"""Synchronised BatchNorm on every device: torch's SyncBatchNorm on GPUs, an all-reduce on the CPU.

Synchronised BatchNorm normalises a training batch with the mean and variance over the batches
of all processes, so N processes of batch B normalise as one process of batch N x B does.
``torch.nn.SyncBatchNorm`` runs on GPUs only (on the CPU it raises, and DDP refuses it there), so
:func:`convert_sync_batchnorm` uses it (through timm's converter, which keeps the activation of
timm's ``BatchNormAct2d``) on CUDA, and on other devices :class:`SyncBatchNorm2d` /
:class:`SyncBatchNormAct2d`, which compute the same statistics with two differentiable
all-reduces (sum and count, then the centred sum of squares). Outside a process group, or in
evaluation mode, all of them are ordinary BatchNorm.

The all-reduce is torch's functional collective (``torch.distributed._functional_collectives``),
the replacement torch 2.14 names when it deprecates ``torch.distributed.nn.functional.all_reduce``
(FutureWarning); its backward is the sum-all-reduce of the gradients, as the statistics need.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from timm.layers import convert_sync_batchnorm as timm_convert_sync_batchnorm
from timm.layers.norm_act import BatchNormAct2d


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over all processes of the default group (same shape); its
    gradient is the sum over processes of the gradients of the result."""
    reduced = funcol.all_reduce(tensor, "sum", dist.group.WORLD)
    return reduced.wait() if isinstance(reduced, funcol.AsyncCollectiveTensor) else reduced


class _AllReducedStatistics:
    """Batch statistics over all processes of the default group, for BatchNorm on (B, C, H, W)."""

    def _synchronising(self) -> bool:
        return self.training and dist.is_initialized() and dist.get_world_size() > 1

    def _synchronised(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise with the biased variance over all processes' batches (affine applied); update
        the running statistics (unbiased variance) as one BatchNorm over the whole batch would."""
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        local_count = input.new_tensor([input.numel() // input.shape[1]])
        sums = all_reduce_sum(torch.cat([input.sum(dims), local_count]))
        count = sums[-1]
        mean = sums[:-1] / count
        centred = input - mean.view(shape)
        variance = all_reduce_sum((centred * centred).sum(dims)) / count
        output = centred * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), variance.detach() * count / (count - 1).clamp(min=1))
        return output

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_variance: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_variance.to(self.running_var.dtype), factor)


class SyncBatchNorm2d(_AllReducedStatistics, torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` with statistics over all processes while training (CPU, gloo)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._synchronised(input) if self._synchronising() else super().forward(input)


class SyncBatchNormAct2d(_AllReducedStatistics, BatchNormAct2d):
    """timm's BatchNorm + dropout + activation with statistics over all processes (CPU, gloo)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._synchronising():
            return super().forward(x)
        return self.act(self.drop(self._synchronised(x)))


_SYNCHRONISED = {torch.nn.BatchNorm2d: SyncBatchNorm2d, BatchNormAct2d: SyncBatchNormAct2d}


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` with every BatchNorm synchronised across processes; its state dict keeps its keys
    and its parameters stay the same objects (an optimiser built on them is unaffected)."""
    if device.type == "cuda":
        return timm_convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) in _SYNCHRONISED:
            # The same attributes with a forward that synchronises; nothing is copied.
            module.__class__ = _SYNCHRONISED[type(module)]
    return model
