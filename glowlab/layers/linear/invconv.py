"""Invertible 1x1 convolutions (Kingma & Dhariwal, 2018): plain and LU-decomposed."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from glowlab.core.bijection import Bijection, logdet_dtype

__all__ = ["InvConv1x1", "InvConv1x1LU", "random_orthogonal"]


def random_orthogonal(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``[n, n]`` orthogonal matrix (QR of a Gaussian matrix, in float64)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


class _OptimizerSteps:
    """Counts ``step()`` calls of every ``torch.optim`` optimiser in the process (a global post-hook).

    The fused optimisers (``torch.optim.Adam(..., fused=True)``) update parameters in place without
    bumping their version counters, so the eval caches below also key on this count.
    """

    count = 0

    @classmethod
    def bump(cls, optimizer, args, kwargs) -> None:
        cls.count += 1


register_optimizer_step_post_hook(_OptimizerSteps.bump)


def _mix_channels(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y[b, o, h, w] = sum_c w[o, c] x[b, c, h, w]``: a 1x1 convolution as a batched matrix
    product (cheaper than oneDNN's ``conv2d`` for the few channels of a flow on the CPU)."""
    return torch.matmul(w, x.flatten(2)).view(x.shape[0], w.shape[0], *x.shape[2:])


class _CachedWeight(Bijection):
    """Shared machinery: ``y = W x`` per pixel, with (W, W^-1, log|det W|) cached in eval mode.

    The cache key holds every parameter's storage pointer and version counter, which change on
    in-place updates, ``load_state_dict`` and ``.to()``, and the process's count of optimiser steps
    (fused optimisers update in place without bumping version counters), so a stale weight is
    never used. The cache is also dropped whenever the mode changes (``train()``/``eval()``).

    The map runs with autocast disabled, in the input's dtype (float32 or wider): the 1x1 conv is
    cheap next to the coupling networks, and keeping it exact keeps the inverse exact.
    """

    event_dim = 3

    def __init__(self, num_channels: int):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"1x1 conv needs num_channels >= 1, got {num_channels}")
        self.num_channels = num_channels
        self._cache: tuple | None = None

    def _weight_and_logabsdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``W`` ([C, C]) and ``log|det W|`` (scalar, float64 or float32)."""
        raise NotImplementedError

    def _key(self):
        return _OptimizerSteps.count, tuple((p.data_ptr(), p._version, p.dtype) for p in self.parameters())

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _get(self, dtype: torch.dtype, need_inverse: bool):
        if (self.training or torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
                or torch.compiler.is_compiling()):  # compiled graphs compute (or constant-fold) it in-graph
            w, lad = self._weight_and_logabsdet()
            w_inv = torch.linalg.inv(w.double()).to(dtype) if need_inverse else None
            return w.to(dtype), w_inv, lad
        key = (self._key(), dtype)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                w, lad = self._weight_and_logabsdet()
                w_inv = torch.linalg.inv(w.double()).to(dtype)
            self._cache = (key, w.to(dtype), w_inv, lad)
        return self._cache[1], self._cache[2], self._cache[3]

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"1x1 conv expects input [B, {self.num_channels}, H, W], got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor, context=None):
        self._check(x)
        with torch.autocast(x.device.type, enabled=False):
            w, _, lad = self._get(x.dtype, need_inverse=False)
            y = _mix_channels(w, x)
        hw = x.shape[2] * x.shape[3]
        logdet = (lad.to(logdet_dtype(x)) * hw).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: torch.Tensor, context=None):
        self._check(y)
        with torch.autocast(y.device.type, enabled=False):
            _, w_inv, lad = self._get(y.dtype, need_inverse=True)
            x = _mix_channels(w_inv, y)
        hw = y.shape[2] * y.shape[3]
        return x, (-lad.to(logdet_dtype(y)) * hw).expand(y.shape[0])


class InvConv1x1(_CachedWeight):
    """Plain invertible 1x1 convolution, ``y = W x`` per pixel, W initialised orthogonal.

    ``log|det W|`` is computed by ``slogdet`` in float64 and ``W^-1`` by ``inv`` in float64.
    Logdet ``[B]`` nats: ``H * W * log|det W|``.
    """

    def __init__(self, num_channels: int):
        super().__init__(num_channels)
        self.weight = nn.Parameter(random_orthogonal(num_channels).to(torch.get_default_dtype()))

    def _weight_and_logabsdet(self):
        lad = torch.linalg.slogdet(self.weight.double()).logabsdet
        return self.weight, lad


class InvConv1x1LU(_CachedWeight):
    """LU-decomposed invertible 1x1 convolution.

    ``W = P (L + I) (U + diag(sign * exp(log_s)))`` with the permutation P and the signs fixed
    (buffers), L strictly lower and U strictly upper triangular. ``log|det W| = sum(log_s)``, so
    the logdet (``[B]`` nats) is ``H * W * sum(log_s)``: O(C) instead of O(C^3).
    """

    def __init__(self, num_channels: int):
        super().__init__(num_channels)
        c = num_channels
        dt = torch.get_default_dtype()
        p, lower, upper = torch.linalg.lu(random_orthogonal(c))
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.to(dt))
        self.register_buffer("sign_s", torch.sign(s).to(dt))
        self.register_buffer("lower_mask", torch.tril(torch.ones(c, c, dtype=dt), -1))
        self.register_buffer("eye", torch.eye(c, dtype=dt))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(dt))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dt))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).to(dt))

    def _weight_and_logabsdet(self):
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        w = self.perm @ lower @ upper
        return w, self.log_s.sum()
