"""Multiscale split: factor out half the channels, with a Gaussian prior conditioned on the rest.

The top priors (:class:`LearnedPrior`, :class:`LogisticPrior`) live in :mod:`glowlab.image.priors`
and are re-exported here; :class:`Split` shares their base (:class:`~glowlab.image.priors.GaussianPrior`).

Example:
    >>> import torch
    >>> split = Split(4)
    >>> h, z = split.split(torch.randn(2, 4, 3, 3))
    >>> split.log_prob(z, h).shape, split.sample(2, context=h, temperature=0.5).shape
    (torch.Size([2]), torch.Size([2, 2, 3, 3]))
"""

from __future__ import annotations

import torch

from glowlab.core.bijection import logdet_dtype
from glowlab.image.priors import (
    GaussianPrior,
    LearnedPrior,
    LogisticPrior,
    gaussian_log_prob,
    legacy_sample_args,
)
from glowlab.layers.coupling.nets import ZeroConv2d

__all__ = ["LearnedPrior", "LogisticPrior", "Split", "gaussian_log_prob"]


class Split(GaussianPrior):
    """Factor out half of the channels: ``x [B, C, H, W] -> (h [B, C - C//2, H, W], z [B, C//2, H, W])``.

    ``z`` gets the Gaussian prior ``N(mean(h), exp(log_std(h))^2)`` from a zero-initialised conv
    on the kept half, so it starts as ``N(0, I)``. As a prior its ``context`` is ``h``:
    ``log_prob(z, h)`` and ``sample(n, context=h, temperature=T)`` (std scaled by T).
    """

    def __init__(self, in_channels: int):
        super().__init__()
        if in_channels < 2:
            raise ValueError(f"Split needs at least 2 channels, got in_channels={in_channels}")
        self.in_channels = in_channels
        self.z_channels = in_channels // 2
        self.h_channels = in_channels - self.z_channels
        self.prior = ZeroConv2d(self.h_channels, 2 * self.z_channels)

    def _params(self, h: torch.Tensor):
        # the prior's mean and log-std enter the likelihood directly: keep them out of autocast
        with torch.autocast(h.device.type, enabled=False):
            out = self.prior(h.to(logdet_dtype(h)))
        return out[:, : self.z_channels], out[:, self.z_channels:]

    def mean_and_log_std(self, n: int, context, device, dtype):
        h = context
        if not isinstance(h, torch.Tensor) or h.dim() != 4 or h.shape[:2] != (n, self.h_channels):
            got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(f"a Split prior is conditioned on the kept half h [{n}, {self.h_channels}, H, W]; "
                             f"pass it as context=h, got {got}")
        return self._params(h)

    def split(self, x: torch.Tensor):
        """Return ``(h, z)``: the kept channels and the factored-out ones."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Split expects {self.in_channels} channels, got shape {tuple(x.shape)}")
        return x[:, : self.h_channels], x[:, self.h_channels:]

    def merge(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, z], dim=1)

    def sample(self, n, context=None, temperature: float = 1.0, device=None, dtype=None,
               generator: torch.Generator | None = None, *, y=None) -> torch.Tensor:
        """Draw ``z ~ N(mean(h), (T * std(h))^2)``, shape ``[n, C//2, H, W]``, in ``h``'s dtype.
        (The pre-0.2 form ``sample(h, T, generator=g)`` still works.)"""
        if isinstance(n, torch.Tensor):  # the pre-0.2 form
            n, context, temperature = n.shape[0], n, context if context is not None else temperature
        context, temperature = legacy_sample_args("Split", context, temperature, y=y)
        if dtype is None and isinstance(context, torch.Tensor):
            dtype = context.dtype
        return super().sample(n, context, temperature, device, dtype, generator)
