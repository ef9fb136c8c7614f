"""Training from several sources at once: the labelled split plus unlabelled groups of image
sources (``--unlabelled GROUP=SHARE``), each a fixed share of every global batch.

Step ``t`` of epoch ``e`` takes, from source ``s``, the frames ``order_s(e)[t n_s : (t+1) n_s]``:
``n_s`` = its share of the global batch G (the split takes the rest), ``order_s(e)`` a permutation
seeded by (seed, epoch, source). The global batch is the sources' chunks in source order, and process
``rank`` takes its slice of it as :class:`~tiekd.stages.training.sampler.EpochSampler` does: the
same global batches for any number of processes, and a resumed run continues exactly. An epoch ends
when a source runs out (the source with the fewest frames for its share sets its length).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

from tiekd.pipeline.errors import ConfigError

SOURCE_SEED_STRIDE = 7919
"""Source ``s`` draws its augmentation from seed + s x this (a prime), so its draws are its own."""


def source_counts(shares: list[float], global_batch: int) -> list[int]:
    """Frames per global batch of each source: the unlabelled shares rounded, the split (first) the rest."""
    extra = [round(share * global_batch) for share in shares[1:]]
    counts = [global_batch - sum(extra), *extra]
    if min(counts) < 1:
        raise ConfigError(
            f"--unlabelled shares {shares[1:]} leave a source no frame of the global batch of {global_batch}; "
            "raise --batch-size or change the shares"
        )
    return counts


class MixedSamples(Dataset):
    """Samples of several sources, by key ``(epoch, source, frame)``; each source a training dataset
    indexed by ``(epoch, frame)``."""

    def __init__(self, sources: list[Dataset]):
        self.sources = sources

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        epoch, source, frame = key
        return self.sources[source][(epoch, frame)]


class MixedEpochSampler(Sampler):
    """One process's ``(epoch, source, frame)`` keys (see the module docstring)."""

    def __init__(self, sizes: list[int], counts: list[int], *, seed: int, start_step: int, total_steps: int,
                 per_process: int, rank: int = 0):  # fmt: skip
        self.sizes, self.counts, self.seed = sizes, counts, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.per_process, self.rank = per_process, rank
        self.steps_per_epoch = mixed_steps_per_epoch(sizes, counts)

    def order(self, epoch: int, source: int) -> list[int]:
        generator = torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 1_009 + source)
        return torch.randperm(self.sizes[source], generator=generator).tolist()

    def __iter__(self):
        step = self.start_step
        while step < self.total_steps:
            epoch, position = divmod(step, self.steps_per_epoch)
            orders = [self.order(epoch, s) for s in range(len(self.sizes))]
            for t in range(position, self.steps_per_epoch):
                if step >= self.total_steps:
                    return
                batch = [(epoch, s, i) for s, n in enumerate(self.counts) for i in orders[s][t * n : (t + 1) * n]]
                yield from batch[self.rank * self.per_process : (self.rank + 1) * self.per_process]
                step += 1

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.per_process


def mixed_steps_per_epoch(sizes: list[int], counts: list[int]) -> int:
    """Steps until the first source runs out."""
    return min(size // count for size, count in zip(sizes, counts))


def unlabelled_sets(cfg, cache_ref: tuple[str, str, str], *, records=None) -> list[tuple[list, tuple, str]]:
    """(frames, group reference, fit) of each --unlabelled group: the run's teacher over image
    sources, checked as the split's group is (same dataset, crop, depth range; every map stored)."""
    from tiekd.data.registry import get_dataset
    from tiekd.pipeline.store.cache import TeacherCache
    from tiekd.stages.training.sampler import check_cache
    from tiekd.stages.training.sources import group_frames

    sets = []
    for group in unlabelled_shares(cfg):
        frames, fit = group_frames(TeacherCache.open(cache_ref[0], cache_ref[1], group))
        ref = check_cache(cache_ref[0], cache_ref[1], group, None, frames, dataset=get_dataset(cfg.dataset),
                          min_depth=cfg.min_depth, max_depth=cfg.max_depth)  # fmt: skip
        sets.append((frames, ref, fit))
    return sets


def unlabelled_shares(cfg) -> dict[str, float]:
    """--unlabelled as group -> share of the global batch; ConfigError for a malformed one."""
    shares = {}
    for text in cfg.unlabelled:
        group, _, share = text.partition("=")
        try:
            shares[group] = float(share)
        except ValueError:
            raise ConfigError(f"--unlabelled {text!r} is not GROUP=SHARE, e.g. rover=0.5") from None
    if any(not 0 < s < 1 for s in shares.values()) or sum(shares.values()) >= 1:
        raise ConfigError(
            f"--unlabelled shares {list(shares.values())} must each be in (0, 1) and leave the split some"
        )
    return shares


def mixed_loader_parts(cfg, first: Dataset, cache_ref, trainer, make_source) -> tuple[MixedSamples, MixedEpochSampler]:
    """The samples and sampler of a run with --unlabelled groups; ``first``: the split's samples,
    ``make_source(frames, ref, fit, seed)`` an unlabelled group's."""
    sets = unlabelled_sets(cfg, cache_ref)
    sources = [first] + [make_source(f, ref, fit, cfg.seed + (s + 1) * SOURCE_SEED_STRIDE) for s, (f, ref, fit) in
                         enumerate(sets)]  # fmt: skip
    counts = source_counts([1.0, *unlabelled_shares(cfg).values()], trainer.global_batch)
    sampler = MixedEpochSampler(
        [len(s) for s in sources], counts, seed=cfg.seed, start_step=trainer.step, total_steps=trainer.total_steps,
        per_process=cfg.batch_size * cfg.accumulate, rank=trainer.processes.rank,
    )  # fmt: skip
    return MixedSamples(sources), sampler


def mixed_epoch_frames(cfg, n_split: int, cache_ref, global_batch: int) -> int:
    """Frames an epoch of a mixed run takes (its steps x the global batch), for the schedule."""
    sizes = [n_split] + [len(frames) for frames, _, _ in unlabelled_sets(cfg, cache_ref)]
    counts = source_counts([1.0, *unlabelled_shares(cfg).values()], global_batch)
    return mixed_steps_per_epoch(sizes, counts) * global_batch
