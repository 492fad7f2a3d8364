"""Samplers: exact evaluation under DDP, and a training shuffle that resumes mid-epoch.

``torch.utils.data.DistributedSampler`` pads the dataset with repeated indices so every rank gets
the same number of samples; a test bits/dim averaged over ranks then counts those duplicates.
:class:`UnrepeatedDistributedSampler` gives rank ``r`` of ``R`` the indices ``r, r + R, r + 2R, ...``
instead: every index exactly once over all ranks, the ranks' counts differing by at most one.

Used for validation and test only. In training, a rank with one batch fewer would wait forever
in DDP's gradient all-reduce; in evaluation DDP syncs buffers only on the first forward, so it is
safe as long as every rank gets at least one sample (checked here).

:class:`ResumableShuffleSampler` shuffles the training set as a function of ``(seed, epoch)``
only (DistributedSampler's permutation), and :class:`ResumableDataLoader` stores the epoch and the
number of batches already trained in the checkpoint (Lightning saves and restores the state of a
train loader that has ``state_dict``/``load_state_dict``). A run resumed from a checkpoint written
in the middle of an epoch then continues with exactly the batches it had not yet seen, in the same
order, instead of a fresh shuffle.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ResumableDataLoader", "ResumableShuffleSampler", "UnrepeatedDistributedSampler"]


class UnrepeatedDistributedSampler(DistributedSampler):
    """Rank ``rank`` of ``num_replicas`` gets indices ``rank::num_replicas``, in order, no padding.

    A subclass of DistributedSampler so that Lightning (``use_distributed_sampler=True``) leaves it
    in place instead of wrapping it in another distributed sampler.

    Args:
        dataset: a sized dataset of ``N >= num_replicas`` items.
        num_replicas, rank: the world size and this process's rank; taken from
            ``torch.distributed`` when None.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)
        if n < self.num_replicas:
            raise ValueError(
                f"an evaluation set of {n} images cannot be split over {self.num_replicas} processes "
                "without leaving one empty (which would hang DDP); use a larger val/test set or fewer devices"
            )
        self.total_size = n
        self.num_samples = len(range(self.rank, n, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ResumableShuffleSampler(DistributedSampler):
    """A shuffle fixed by ``(seed, epoch)`` that can start part-way through an epoch.

    The order is DistributedSampler's (``randperm`` seeded with ``seed + epoch``, padded to a
    multiple of ``num_replicas``, rank ``r`` taking every ``num_replicas``-th index from ``r``); with
    one process it is a plain seeded shuffle. :meth:`skip` drops the first ``n`` indices of the next
    iteration only: that is how a resumed run jumps past the batches it has already trained on.

    Example:
        >>> s = ResumableShuffleSampler(range(10), seed=0)
        >>> s.set_epoch(3); order = list(s)
        >>> s.skip(4); list(s) == order[4:]
        True
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self._skip = 0

    def skip(self, n: int) -> None:
        """Leave out the first ``n`` indices (of this rank) of the next iteration."""
        self._skip = max(0, int(n))

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self._skip = self._skip, 0
        return iter(indices[start:])


class ResumableDataLoader(DataLoader):
    """A DataLoader whose ``state_dict`` holds ``{"epoch", "batches_done", "batches_per_epoch",
    "batch_size", "num_replicas", "seed"}``, for a :class:`ResumableShuffleSampler`.

    ``progress()`` returns ``(batches_done, batches_per_epoch)``: the data module sets it to the
    trainer's count of batches trained in the current epoch and its epoch length
    (``limit_train_batches`` included), since the loader's own iterator runs ahead by the batches
    prefetched. :meth:`load_state_dict` makes the next iteration start after those batches (or
    at the next epoch when the epoch was complete), when the batch size, world size and seed are
    unchanged; else it warns and starts the epoch again.
    """

    progress: Callable[[], tuple[int, float]] | None = None

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, ResumableShuffleSampler) or self.progress is None:
            return {}
        done, per_epoch = self.progress()
        return {"epoch": int(sampler.epoch), "batches_done": int(done), "batches_per_epoch": float(per_epoch),
                "batch_size": self.batch_size, "num_replicas": sampler.num_replicas, "seed": sampler.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self.sampler
        if not state or not isinstance(sampler, ResumableShuffleSampler):
            return
        now = {"batch_size": self.batch_size, "num_replicas": sampler.num_replicas, "seed": sampler.seed}
        changed = {k: (state.get(k), v) for k, v in now.items() if state.get(k) != v}
        sampler.set_epoch(int(state["epoch"]))
        if changed:
            warnings.warn(f"resuming with other data settings {changed} (checkpoint, now): epoch {state['epoch']} "
                          f"starts again from its first batch instead of after batch {state['batches_done']}",
                          stacklevel=2)
            return
        done = int(state["batches_done"])
        if done >= state.get("batches_per_epoch", len(self)):  # the epoch was complete: the next one starts
            sampler.set_epoch(int(state["epoch"]) + 1)
        else:
            sampler.skip(done * self.batch_size)
