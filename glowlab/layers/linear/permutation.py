"""Fixed channel permutations: reverse (RealNVP) and random shuffle (Glow's baseline).

Both permute dimension 1 of ``[B, C, ...]``: the channels of images ``[B, C, H, W]`` or the
coordinates of vectors ``[B, D]`` (``event_dim = None``: any such layout). Volume preserving: ladj
``[B]`` is zero in both directions.

Example:
    >>> import torch
    >>> y, ladj = Reverse()(torch.tensor([[1.0, 2.0, 3.0]]))
    >>> y.tolist(), ladj.tolist()
    ([[3.0, 2.0, 1.0]], [0.0])
    >>> shuffle = Shuffle(4, generator=torch.Generator().manual_seed(0))
    >>> x = torch.randn(2, 4, 3, 3)
    >>> bool(torch.equal(shuffle.inverse(shuffle(x)[0])[0], x))
    True
"""

from __future__ import annotations

import torch

from glowlab.core.bijection import Bijection, zero_ladj

__all__ = ["Reverse", "Shuffle"]


class Reverse(Bijection):
    """Reverse the channel order (dimension 1 of ``[B, C, ...]``: images or vectors). Volume preserving:
    ladj ``[B]`` is zero."""

    def forward(self, x: torch.Tensor, context=None):
        return x.flip(1), zero_ladj(x)

    def inverse(self, y: torch.Tensor, context=None):
        return y.flip(1), zero_ladj(y)


class Shuffle(Bijection):
    """A fixed random channel permutation. The indices are buffers, so they are saved and loaded.

    Args:
        num_channels: C.
        generator: optional RNG for the permutation.
    """

    def __init__(self, num_channels: int, generator: torch.Generator | None = None):
        super().__init__()
        perm = torch.randperm(num_channels, generator=generator)
        self.num_channels = num_channels
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"Shuffle expects {self.num_channels} channels, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, context=None):
        self._check(x)
        return x[:, self.perm], zero_ladj(x)

    def inverse(self, y: torch.Tensor, context=None):
        self._check(y)
        return y[:, self.inv_perm], zero_ladj(y)
