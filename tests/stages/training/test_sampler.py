"""The training data order: one seeded permutation per epoch, sliced the same way for any number of
processes and accumulated micro-batches, so a global batch is the same however it is split."""

import pytest
import torch

from tiekd.stages.training.sampler import EpochSampler

N_FRAMES = 37
"""Not a multiple of the global batch: the incomplete last global batch of an epoch is dropped."""


def micro_batches(global_batch: int, *, world_size: int, accumulate: int, start_step=0, total_steps=10):
    """Per step, the micro-batches of all processes, rank-major, each a list of (epoch, frame) keys."""
    batch_size = global_batch // (world_size * accumulate)
    per_rank = []
    for rank in range(world_size):
        keys = list(
            EpochSampler(
                N_FRAMES,
                batch_size,
                seed=3,
                start_step=start_step,
                total_steps=total_steps,
                accumulate=accumulate,
                rank=rank,
                world_size=world_size,
            )
        )
        per_rank.append([keys[i : i + batch_size] for i in range(0, len(keys), batch_size)])
    steps = []
    for step in range(total_steps - start_step):
        steps.append([m for rank in per_rank for m in rank[step * accumulate : (step + 1) * accumulate]])
    return steps


def test_one_process_takes_consecutive_slices_of_the_epoch_order():
    sampler = EpochSampler(N_FRAMES, 4, seed=3, start_step=0, total_steps=20)
    keys = list(sampler)
    assert sampler.steps_per_epoch == 9 and len(keys) == len(sampler) == 80
    generator = torch.Generator().manual_seed(3 * 100_003 + 1)  # the order of epoch 1
    epoch_1 = torch.randperm(N_FRAMES, generator=generator).tolist()
    assert keys[9 * 4 : 18 * 4] == [(1, frame) for frame in epoch_1[:36]]
    assert {frame for epoch, frame in keys[:36]} == set(sampler.order(0)[:36])


@pytest.mark.parametrize("world_size, accumulate", [(2, 1), (4, 1), (1, 2), (2, 2), (8, 1)])
def test_the_global_batch_is_the_same_for_any_split(world_size, accumulate):
    single = micro_batches(8, world_size=1, accumulate=1)
    split = micro_batches(8, world_size=world_size, accumulate=accumulate)
    assert [sum(step, []) for step in split] == [sum(step, []) for step in single]
    assert all(len(step) == world_size * accumulate for step in split)


def test_processes_and_accumulation_give_the_same_micro_batches():
    """2 processes of batch 2 see, step by step, the micro-batches one process accumulating 2 sees."""
    assert micro_batches(8, world_size=2, accumulate=2) == micro_batches(8, world_size=1, accumulate=4)
    assert micro_batches(8, world_size=4, accumulate=1) == micro_batches(8, world_size=1, accumulate=4)


def test_process_r_takes_the_r_th_slice():
    order = EpochSampler(N_FRAMES, 1, seed=3, start_step=0, total_steps=1).order(0)
    for rank in range(2):
        keys = list(EpochSampler(N_FRAMES, 3, seed=3, start_step=0, total_steps=2, rank=rank, world_size=2))
        assert keys == [(0, f) for f in order[rank * 3 : rank * 3 + 3] + order[6 + rank * 3 : 6 + rank * 3 + 3]]


def test_resume_on_another_number_of_processes_continues_the_same_steps():
    whole = micro_batches(8, world_size=1, accumulate=1, total_steps=12)
    resumed = micro_batches(8, world_size=2, accumulate=2, start_step=7, total_steps=12)
    assert [sum(step, []) for step in resumed] == [sum(step, []) for step in whole[7:]]
    assert resumed[0][0][0][0] == 1, "step 7 lies in epoch 1 (4 steps of 8 per epoch of 37 frames)"
