"""The data side of a training run: cache checks, data order, seeding."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from tiekd.data.description import DatasetDescription
from tiekd.data.records import Record
from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.cache import TeacherCache


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (model initialisation draws from torch)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochSampler(Sampler):
    """Yields one process's ``(epoch, frame)`` keys: a seeded permutation per epoch, from any step on.

    Epoch ``e``'s order depends only on ``(seed, e)``, so a resumed run continues with exactly the
    batches an uninterrupted one would have seen. Step ``s`` of epoch ``e`` takes the global batch
    ``order[s * G : (s + 1) * G]`` with ``G = world_size * batch_size * accumulate``; process ``rank``
    takes its ``rank``-th slice of ``batch_size * accumulate`` keys, ``accumulate`` micro-batches of
    ``batch_size`` in turn. The micro-batches of a step are thus the same for any split of ``G`` into
    processes and accumulation, and a run may resume on another number of processes with the same
    global batch. Incomplete last global batches are dropped.
    """

    def __init__(
        self,
        n_frames: int,
        batch_size: int,
        *,
        seed: int,
        start_step: int,
        total_steps: int,
        accumulate: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.n_frames = n_frames
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.total_steps = total_steps
        self.per_process = batch_size * accumulate
        """Keys this process takes per step."""
        self.rank = rank
        self.global_batch = world_size * self.per_process
        self.steps_per_epoch = n_frames // self.global_batch

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n_frames, generator=generator).tolist()

    def __iter__(self):
        step = self.start_step
        while step < self.total_steps:
            epoch, position = divmod(step, self.steps_per_epoch)
            order = self.order(epoch)
            for s in range(position, self.steps_per_epoch):
                if step >= self.total_steps:
                    return
                first = s * self.global_batch + self.rank * self.per_process
                yield from ((epoch, i) for i in order[first : first + self.per_process])
                step += 1

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.per_process


def check_cache(
    path: str,
    teacher: str | None,
    split_name: str | None,
    split: Path | None,
    records: list[Record],
    *,
    dataset: DatasetDescription,
    min_depth: float,
    max_depth: float,
) -> tuple[str, str, str]:
    """Open the cache for a training split and refuse one that does not fit; returns its reference.

    Every record must have a stored map; the cache's crop must be the dataset's cache crop and
    its depth range the run's.
    """
    if split is None:  # a group of image sources: its own record of its frames
        cache = TeacherCache.open(path, teacher, split_name)
    else:
        cache = TeacherCache.open_for_split(path, teacher, split_name, split)
    spec = cache.spec
    spec.require_dataset(dataset.name, location=cache.location)
    if tuple(spec.crop) != tuple(dataset.cache_crop):
        raise StoreError(
            f"{cache.location} holds {spec.crop[0]}x{spec.crop[1]} maps, this run needs the {dataset.cache_crop_title}"
        )
    if (spec.min_depth, spec.max_depth) != (min_depth, max_depth):
        raise StoreError(
            f"{cache.location} holds depth in [{spec.min_depth}, {spec.max_depth}] m, this run uses "
            f"[{min_depth}, {max_depth}] m; pass --max-depth {spec.max_depth} or re-cache"
        )
    cache.require_stored([r.rgb for r in records], what="training images")
    teacher_name, split_group = cache.location.rsplit("/", 2)[-2:]
    return path, teacher_name, split_group
