"""Space-to-depth reshapes used between the levels of multiscale flows."""

from __future__ import annotations

import torch
from einops import rearrange

from glowlab.flows.base import Flow, logdet_dtype

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


class Squeeze(Flow):
    """Space-to-depth by 2 as a flow (a permutation of entries: logdet ``[B]`` is zero)."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        return squeeze2d(x), x.new_zeros(x.shape[0], dtype=logdet_dtype(x))

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return unsqueeze2d(y)


class Unsqueeze(Flow):
    """Depth-to-space by 2 as a flow; the inverse of :class:`Squeeze`."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        return unsqueeze2d(x), x.new_zeros(x.shape[0], dtype=logdet_dtype(x))

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return squeeze2d(y)
