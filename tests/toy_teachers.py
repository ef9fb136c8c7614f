"""Small deterministic teachers for the tests, importable as ``python:toy_teachers:<factory>``."""

import time

import torch
from torch import nn


class RowPrior(nn.Module):
    """Depth from the image row (far at the top, near at the bottom), the colour and the column.

    The column term is odd under a horizontal flip, so flip TTA visibly changes the output.
    """

    def __init__(self, *, delay: float = 0.0, seed: int = 0, fail_after: int = -1):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.colour = nn.Parameter(torch.rand(3, generator=generator))
        self.delay = delay
        self.calls_left = fail_after
        """Forward calls before it raises, as a teacher that crashes mid-run; -1 = never."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.calls_left == 0:
            raise RuntimeError("the toy teacher failed as asked (fail_after)")
        self.calls_left -= 1
        if self.delay:
            time.sleep(self.delay)
        height, width = image.shape[-2:]
        rows = torch.linspace(60.0, 3.0, height, device=image.device).view(1, 1, height, 1)
        cols = torch.linspace(-1.0, 1.0, width, device=image.device).view(1, 1, 1, width)
        colour = torch.einsum("bchw,c->bhw", image, self.colour).unsqueeze(1)
        return rows + 2.0 * colour + 1.5 * cols


def row_prior(delay: float = 0.0, seed: int = 0, fail_after: int = -1) -> nn.Module:
    return RowPrior(delay=delay, seed=seed, fail_after=fail_after)


class IndoorPrior(RowPrior):
    """RowPrior scaled to a room: depth within NYU's (0, 10) m for images in [0, 1]."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return super().forward(image) / 10


def indoor_prior(seed: int = 0) -> nn.Module:
    return IndoorPrior(seed=seed)


class _Broken(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, image):
        depth = torch.full_like(image[:, :1], 10.0)
        if self.kind == "nan":
            depth[-1, 0, 5, 5] = float("nan")
            return depth
        if self.kind == "negative":
            return -depth
        if self.kind == "small":
            return depth[..., :10, :10]
        if self.kind == "raise":
            raise RuntimeError("the teacher broke")
        return depth.expand(-1, 2, -1, -1)


def nan_teacher() -> nn.Module:
    """Returns NaN at one pixel of the last sample of every batch."""
    return _Broken("nan")


def two_channel_teacher() -> nn.Module:
    """Returns (B, 2, H, W): the wrong shape."""
    return _Broken("shape")


def negative_teacher() -> nn.Module:
    """Returns -10 m everywhere: every pixel is clipped."""
    return _Broken("negative")


def small_map_teacher() -> nn.Module:
    """Returns a (B, 1, 10, 10) map whatever the input size."""
    return _Broken("small")


def raising_teacher() -> nn.Module:
    """Raises RuntimeError in forward."""
    return _Broken("raise")


def not_a_module():
    return "depth"


class InverseOf(nn.Module):
    """A relative teacher: ``scale / depth + shift`` of a metric teacher's depth (disparity up to an
    unknown affine map, as Depth Anything's relative models and MiDaS give)."""

    def __init__(self, metric: nn.Module, scale: float, shift: float):
        super().__init__()
        self.metric, self.scale, self.shift = metric, scale, shift

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.scale / self.metric(image) + self.shift


def row_prior_inverse(scale: float = 3.0, shift: float = 0.25) -> nn.Module:
    """RowPrior's depth as an affine function of its inverse."""
    return InverseOf(RowPrior(), scale, shift)


class RedDepth(nn.Module):
    """Depth written in the image: 1 + 19 x the red channel, metres (tests/support/own_images.py)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 1.0 + 19.0 * image[:, :1]


def red_inverse(scale: float = 2.0, shift: float = -0.1) -> nn.Module:
    """A relative teacher whose output is an affine function of the true inverse depth of a red-coded image."""
    return InverseOf(RedDepth(), scale, shift)
