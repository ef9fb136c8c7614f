"""Several training processes with torch's own DDP, as nanoGPT's ``train.py`` runs them.

A process learns its place from torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)
once, at start-up (:func:`processes_from_env`). Without torchrun it is the only process
(rank 0 of 1) and no process group exists; every helper here is then the identity, so one code
path serves one process and many. Rank 0 is the writer: it alone writes run.json, the logs and
the checkpoints. The backend is NCCL on CUDA and gloo on the CPU.

Every process must call the collectives below (:func:`mean_over_processes`, :func:`gathered`)
in the same order; torchrun stops the whole group when one process dies.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import click
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tiekd.pipeline.sync_batchnorm import convert_sync_batchnorm

SHARED_STORE_NOTE = (
    "note: torchrun --max-restarts with its shared rendezvous store can fail to restart the group "
    "(a restarted process reads its predecessor's address; pytorch/pytorch#135712): launch torchrun "
    "with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"
)
"""Seen with torch 2.14: about one restart in two failed on gloo's connect without the variable."""

COLLECTIVE_TIMEOUT = timedelta(minutes=60)
"""How long a process waits in a collective: the others wait while the writer validates an epoch
(minutes on KITTI's 652 images); a dead process is noticed by torchrun, not by this timeout."""


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes."""

    rank: int = 0
    """Global rank, 0 .. world_size - 1."""
    local_rank: int = 0
    """Rank on this node: the CUDA device it trains on."""
    world_size: int = 1
    launched: bool = False
    """Started by torchrun: a process group is joined (also with one process)."""

    @property
    def is_writer(self) -> bool:
        """The one process that writes run.json, the logs and the checkpoints."""
        return self.rank == 0


SINGLE = Processes()
"""A process on its own (no torchrun)."""


def processes_from_env(env: dict | None = None) -> Processes:
    """Read this process's place from torchrun's variables; :data:`SINGLE` without them."""
    env = os.environ if env is None else env
    if "RANK" not in env:
        return SINGLE
    return Processes(
        rank=int(env["RANK"]),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        world_size=int(env["WORLD_SIZE"]),
        launched=True,
    )


def join(processes: Processes, device: torch.device) -> torch.device:
    """Join the process group (under torchrun) and return this process's training device:
    ``cuda:LOCAL_RANK`` with NCCL on CUDA, the CPU with gloo."""
    if not processes.launched or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
    if processes.is_writer and restarts and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        click.echo(SHARED_STORE_NOTE, err=True)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return device


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def replicate(model: torch.nn.Module, device: torch.device, *, sync_bn: bool, compile: bool = False) -> torch.nn.Module:
    """The module a training step calls: ``model`` itself, or DDP around it in a process group,
    compiled with ``torch.compile`` when ``compile`` (DDP compiled whole, as torch documents).

    ``model`` stays the bare network (its state dict has no ``module.`` or ``_orig_mod.``
    prefix), so checkpoints are the same for any number of processes, compiled or not. With
    ``sync_bn`` its BatchNorm layers are converted in place to ones that normalise with the
    statistics of all processes' batches.
    """
    if sync_bn:
        convert_sync_batchnorm(model, device)
    replica = model
    if dist.is_initialized():
        replica = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(replica) if compile else replica


def accumulating(replica: torch.nn.Module, more_to_come: bool):
    """Context for one micro-batch's backward: DDP averages gradients only after the last one."""
    replica = getattr(replica, "_orig_mod", replica)  # under torch.compile's wrapper
    if more_to_come and isinstance(replica, DistributedDataParallel):
        return replica.no_sync()
    return contextlib.nullcontext()


def mean_over_processes(values: list[float], device: torch.device) -> list[float]:
    """The mean of each value over all processes (float64); the values themselves in one process."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return (tensor / dist.get_world_size()).tolist()


def gathered(values: list) -> list:
    """Every process's ``values`` (a picklable list) joined in rank order, in every process;
    ``values`` itself in one process."""
    if not dist.is_initialized():
        return list(values)
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return [value for part in parts for value in part]
