"""Space-to-depth reshapes used between the levels of multiscale flows."""

from __future__ import annotations

import torch
from einops import rearrange

from glowlab.core.bijection import Bijection, zero_ladj

__all__ = ["Squeeze", "Unsqueeze", "squeeze2d", "unsqueeze2d"]


def squeeze2d(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, 4C, H/2, W/2]``: each 2x2 patch becomes 4 channels."""
    if x.dim() != 4 or x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"squeeze needs [B, C, H, W] with even H and W, got {tuple(x.shape)}")
    return rearrange(x, "b c (h i) (w j) -> b (c i j) h w", i=2, j=2)


def unsqueeze2d(x: torch.Tensor) -> torch.Tensor:
    """``[B, 4C, H, W] -> [B, C, 2H, 2W]``, the inverse of :func:`squeeze2d`."""
    if x.dim() != 4 or x.shape[1] % 4:
        raise ValueError(f"unsqueeze needs [B, 4C, H, W], got {tuple(x.shape)}")
    return rearrange(x, "b (c i j) h w -> b c (h i) (w j)", i=2, j=2)


class Squeeze(Bijection):
    """Space-to-depth by 2 as a bijection (a permutation of entries: ladj ``[B]`` is zero)."""

    event_dim = 3

    def forward(self, x: torch.Tensor, context=None):
        return squeeze2d(x), zero_ladj(x)

    def inverse(self, y: torch.Tensor, context=None):
        return unsqueeze2d(y), zero_ladj(y)


class Unsqueeze(Bijection):
    """Depth-to-space by 2 as a bijection; the inverse of :class:`Squeeze`."""

    event_dim = 3

    def forward(self, x: torch.Tensor, context=None):
        return unsqueeze2d(x), zero_ladj(x)

    def inverse(self, y: torch.Tensor, context=None):
        return squeeze2d(y), zero_ladj(y)
