"""The flow contract and the sequential composition of flows."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["Flow", "FlowSequence", "logdet_dtype"]


def logdet_dtype(x: torch.Tensor) -> torch.dtype:
    """Logdets accumulate in float32 or wider, whatever the activation dtype (e.g. under autocast)."""
    return torch.promote_types(x.dtype, torch.float32)


class Flow(nn.Module):
    """An invertible map on tensors of shape ``[B, C, H, W]``.

    Subclasses implement:

    * ``forward(x, cond=None) -> (y, logdet)``: data to latent. ``logdet`` has shape ``[B]``, in
      nats: ``log |det dy/dx|`` for each sample, in float32 or wider.
    * ``inverse(y, cond=None) -> x``: the exact inverse.

    ``cond`` is an optional conditioning tensor (``[B, K]`` vector or ``[B, K, H, W]`` map);
    flows that do not use it ignore it.
    """

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class FlowSequence(Flow):
    """Flows applied in order; the logdet is the sum of the parts' logdets.

    Example:
        >>> from glowlab.flows import ActNorm, Reverse
        >>> f = FlowSequence([ActNorm(4), Reverse()])
        >>> y, logdet = f(torch.randn(2, 4, 3, 3))
        >>> logdet.shape
        torch.Size([2])
    """

    def __init__(self, flows: Iterable[Flow]):
        super().__init__()
        self.flows = nn.ModuleList(flows)

    def __len__(self) -> int:
        return len(self.flows)

    def __iter__(self):
        return iter(self.flows)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        logdet = x.new_zeros(x.shape[0], dtype=logdet_dtype(x))
        for flow in self.flows:
            x, ld = flow(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for flow in reversed(self.flows):
            y = flow.inverse(y, cond)
        return y
