"""Distributed sampling that keeps evaluation exact.

``torch.utils.data.DistributedSampler`` pads the dataset with repeated indices so every rank gets
the same number of samples; a test bits/dim averaged over ranks then counts those duplicates.
:class:`UnrepeatedDistributedSampler` gives rank ``r`` of ``R`` the indices ``r, r + R, r + 2R, ...``
instead: every index exactly once over all ranks, the ranks' counts differing by at most one.

Used for validation and test only. In training, a rank with one batch fewer would wait forever
in DDP's gradient all-reduce; in evaluation DDP syncs buffers only on the first forward, so it is
safe as long as every rank gets at least one sample (checked here).
"""

from __future__ import annotations

from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler

__all__ = ["UnrepeatedDistributedSampler"]


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
