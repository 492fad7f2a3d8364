"""Fixed channel permutations: reverse (RealNVP) and random shuffle (Glow's baseline)."""

from __future__ import annotations

import torch

from glowlab.flows.base import Flow, logdet_dtype

__all__ = ["Reverse", "Shuffle"]


class Reverse(Flow):
    """Reverse the channel order. Volume preserving: logdet ``[B]`` is zero."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        return x.flip(1), x.new_zeros(x.shape[0], dtype=logdet_dtype(x))

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return y.flip(1)


class Shuffle(Flow):
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

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        self._check(x)
        return x[:, self.perm], x.new_zeros(x.shape[0], dtype=logdet_dtype(x))

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        self._check(y)
        return y[:, self.inv_perm]
