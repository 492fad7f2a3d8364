"""A data module for runs without data (reverse KL to an energy): an epoch is a number of steps.

Lightning's loops iterate over data loaders; here each loader yields ``steps`` copies of a dummy
batch (``torch.zeros(1)``) that the objective ignores, so ``trainer.max_epochs``,
``val_check_interval``, checkpoints and logging work as for a dataset.

Example:
    >>> dm = StepsDataModule(steps_per_epoch=5)
    >>> len(dm.train_dataloader()), len(dm.val_dataloader())
    (5, 1)
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["StepsDataModule"]


class _Steps(Dataset):
    def __init__(self, steps: int):
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.zeros(1)


class StepsDataModule(pl.LightningDataModule):
    """``steps_per_epoch`` training steps per epoch, ``val_steps`` and ``test_steps`` evaluation
    batches; every batch is a dummy ``[1, 1]`` tensor. ``n_bits`` is None (no quantised data)."""

    n_bits = None

    def __init__(self, steps_per_epoch: int = 100, val_steps: int = 1, test_steps: int = 1):
        super().__init__()
        for name, value in (("steps_per_epoch", steps_per_epoch), ("val_steps", val_steps), ("test_steps", test_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.steps_per_epoch, self.val_steps, self.test_steps = steps_per_epoch, val_steps, test_steps

    def check_model_compatible(self, event_shape) -> None:
        """Any model fits: there is no data."""

    def _loader(self, steps: int) -> DataLoader:
        return DataLoader(_Steps(steps), batch_size=1)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.steps_per_epoch)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_steps)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_steps)
