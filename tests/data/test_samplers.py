"""Distributed sampling: evaluation sees every image exactly once over all ranks."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DistributedSampler

from glowlab.data import FlowDataModule, UnrepeatedDistributedSampler
from glowlab.data.samplers import ResumableShuffleSampler


@pytest.mark.parametrize("n", [10, 11, 2])
def test_unrepeated_covers_each_index_once(n):
    ranks = [list(UnrepeatedDistributedSampler(range(n), num_replicas=2, rank=r)) for r in (0, 1)]
    assert Counter(ranks[0] + ranks[1]) == Counter(range(n))
    assert [len(UnrepeatedDistributedSampler(range(n), num_replicas=2, rank=r)) for r in (0, 1)] == \
        [len(r) for r in ranks]
    assert abs(len(ranks[0]) - len(ranks[1])) <= 1
    # what it replaces: torch's sampler pads an odd count with a duplicate
    padded = [list(DistributedSampler(range(n), num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert len(padded[0] + padded[1]) == n + n % 2


def test_unrepeated_refuses_an_empty_rank():
    with pytest.raises(ValueError, match="3 processes"):
        UnrepeatedDistributedSampler(range(2), num_replicas=3, rank=2)


def _as_rank(dm: FlowDataModule, rank: int, world: int = 2) -> FlowDataModule:
    dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)  # what the loaders read
    return dm


def test_datamodule_loaders_under_two_ranks():
    dm = FlowDataModule("digits", root="x", n_bits=5, batch_size=32, eval_batch_size=16, val_size=73)
    dm.setup(None)
    val_labels, test_images, train_idx = [], [], []
    for rank in (0, 1):
        _as_rank(dm, rank)
        val, test, train = dm.val_dataloader(), dm.test_dataloader(), dm.train_dataloader()
        assert isinstance(val.sampler, UnrepeatedDistributedSampler)
        assert isinstance(test.sampler, UnrepeatedDistributedSampler)
        assert isinstance(train.sampler, ResumableShuffleSampler) and train.sampler.shuffle
        assert isinstance(train.sampler, DistributedSampler)  # so Lightning leaves it in place
        assert train.sampler.seed == dm.seed
        val_labels += [y for _, y in val]
        test_images += [img.numpy().tobytes() for x, _ in test for img in x]
        train_idx.append(list(train.sampler))
    assert sum(len(y) for y in val_labels) == 73  # no padding
    assert sorted(torch.cat(val_labels).tolist()) == sorted(
        dm.val_dataset.base.labels[dm.val_dataset.indices].tolist())
    assert Counter(test_images) == Counter(img.numpy().tobytes() for img in dm.test_dataset.base.images)
    assert len(set(train_idx[0]) | set(train_idx[1])) == len(dm.train_dataset)


def test_single_process_has_no_distributed_sampler():
    dm = FlowDataModule("digits", root="x", n_bits=5)
    dm.setup(None)
    assert not isinstance(dm.val_dataloader().sampler, DistributedSampler)
    train = dm.train_dataloader().sampler
    assert isinstance(train, ResumableShuffleSampler) and train.num_replicas == 1
    assert sorted(train) == list(range(len(dm.train_dataset)))  # a permutation: nothing padded


def test_resumable_sampler_is_a_function_of_seed_and_epoch_and_skips_once():
    a, b = ResumableShuffleSampler(range(50), seed=3), ResumableShuffleSampler(range(50), seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    order = list(a)
    assert list(b) == order and sorted(order) == list(range(50))
    b.set_epoch(3)
    assert list(b) != order
    a.skip(20)
    assert list(a) == order[20:]
    assert list(a) == order  # the skip applies to one iteration only


def test_resumable_loader_state_restarts_after_the_trained_batches():
    """The loader's state names the batches trained (from ``progress``, not its prefetching
    iterator); loading it into a fresh loader yields exactly the rest of that epoch."""
    from glowlab.data.samplers import ResumableDataLoader

    def loader():
        return ResumableDataLoader(range(40), batch_size=4, sampler=ResumableShuffleSampler(range(40), seed=1))

    first = loader()
    first.sampler.set_epoch(5)
    full = [b.tolist() for b in first]
    first.progress = lambda: (3, 10)
    state = first.state_dict()
    assert state["epoch"] == 5 and state["batches_done"] == 3
    second = loader()
    second.load_state_dict(state)
    assert [b.tolist() for b in second] == full[3:]
    third = loader()  # a complete epoch: the next one starts from its first batch
    third.load_state_dict({**state, "batches_done": 10})
    assert third.sampler.epoch == 6 and len([b for b in third]) == 10
    with pytest.warns(UserWarning, match="batch_size"):
        other = ResumableDataLoader(range(40), batch_size=8, sampler=ResumableShuffleSampler(range(40), seed=1))
        other.load_state_dict(state)
    assert other.sampler.epoch == 5 and len(list(other)) == 5
