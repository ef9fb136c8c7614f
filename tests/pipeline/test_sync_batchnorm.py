"""pipeline/sync_batchnorm.py in one process: the all-reduced statistics equal BatchNorm's, with
gradients, and the collective raises no deprecation warning. Two processes: the slow
tests/stages/training/test_distributed.py."""

import copy
import warnings

import pytest
import torch
import torch.distributed as dist

from tiekd.pipeline.sync_batchnorm import SyncBatchNorm2d, all_reduce_sum


@pytest.fixture
def one_process_group():
    """A gloo group of world size 1 in this process (an in-memory store: no port, no file)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_all_reduce_sum_passes_value_and_gradient_without_warnings(one_process_group):
    x = torch.tensor([1.0, -2.0, 3.5], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.distributed.nn.functional.all_reduce: FutureWarning
        y = all_reduce_sum(x * 2)
        (y * torch.tensor([1.0, 10.0, 100.0])).sum().backward()
    assert torch.equal(y.detach(), torch.tensor([2.0, -4.0, 7.0]))
    assert torch.equal(x.grad, torch.tensor([2.0, 20.0, 200.0]))


def test_synchronised_statistics_equal_batchnorm_with_gradients(one_process_group):
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0), plain.bias.uniform_(-1.0, 1.0)
    synced = copy.deepcopy(plain)
    synced.__class__ = SyncBatchNorm2d
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    scale = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = synced._synchronised(b)
        (out * scale).sum().backward()
    expected = plain(a)
    (expected * scale).sum().backward()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-12)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(synced, name).grad, getattr(plain, name).grad, rtol=0, atol=1e-12)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(synced, name), getattr(plain, name), rtol=0, atol=1e-12)
