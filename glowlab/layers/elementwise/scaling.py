"""Elementwise scaling: the final layer of NICE."""

from __future__ import annotations

import torch
from torch import nn

from glowlab.core.bijection import Bijection, logdet_dtype

__all__ = ["DiagonalScale"]


class DiagonalScale(Bijection):
    """``y = x * exp(log_scale)`` with one learned scale per dimension of the ``[C, H, W]`` image.

    Logdet ``[B]`` nats: ``sum(log_scale)``. NICE (Dinh et al., 2015) ends with this layer so
    that the volume-preserving couplings can still change the density's scale per dimension.
    ``shape`` is one event: ``(D,)`` for vectors, ``(C, H, W)`` for images (``event_dim = len(shape)``).

    Example:
        >>> import torch
        >>> scale = DiagonalScale((3,))
        >>> with torch.no_grad():
        ...     _ = scale.log_scale.fill_(0.5)
        >>> y, ladj = scale(torch.ones(2, 3))
        >>> ladj.tolist()
        [1.5, 1.5]

    References:
        Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", ICLR 2015.
    """

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.event_dim = len(self.shape)
        self.log_scale = nn.Parameter(torch.zeros(self.shape))

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"DiagonalScale expects [B, {', '.join(map(str, self.shape))}], got {tuple(x.shape)}")

    def _ladj(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_scale.to(logdet_dtype(x)).sum().expand(x.shape[0])

    def forward(self, x: torch.Tensor, context=None):
        self._check(x)
        return x * self.log_scale.exp().to(x.dtype), self._ladj(x)

    def inverse(self, y: torch.Tensor, context=None):
        self._check(y)
        return y * (-self.log_scale).exp().to(y.dtype), -self._ladj(y)
