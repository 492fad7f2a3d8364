"""Multiscale split with a learned conditional prior, and the learned top prior."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.core.bijection import logdet_dtype
from glowlab.layers.coupling.nets import ZeroConv2d

__all__ = ["gaussian_log_prob", "Split", "LearnedPrior", "LogisticPrior"]

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(z; mean, exp(log_std)^2)`` summed over all but the batch dimension: ``[B]`` nats,
    computed in float32 or wider."""
    dt = logdet_dtype(z)
    z, mean, log_std = z.to(dt), mean.to(dt), log_std.to(dt)
    per_dim = -0.5 * (_LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-log_std)) ** 2)
    return per_dim.flatten(1).sum(1)


class Split(nn.Module):
    """Factor out half of the channels: ``x [B, C, H, W] -> (h [B, C - C//2, H, W], z [B, C//2, H, W])``.

    ``z`` gets the Gaussian prior ``N(mean(h), exp(log_std(h))^2)`` from a zero-initialised conv
    on the kept half, so it starts as ``N(0, I)``. Sampling with temperature T scales the std by T.
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

    def split(self, x: torch.Tensor):
        """Return ``(h, z)``: the kept channels and the factored-out ones."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Split expects {self.in_channels} channels, got shape {tuple(x.shape)}")
        return x[:, : self.h_channels], x[:, self.h_channels:]

    def merge(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, z], dim=1)

    def log_prob(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``log p(z | h)``, ``[B]`` nats."""
        mean, log_std = self._params(h)
        return gaussian_log_prob(z, mean, log_std)

    def sample(self, h: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None):
        """Draw ``z ~ N(mean(h), (T * std(h))^2)``, shape ``[B, C//2, H, W]``."""
        mean, log_std = self._params(h)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=h.dtype)
        return mean.to(h.dtype) + log_std.to(h.dtype).exp() * temperature * eps


class LearnedPrior(nn.Module):
    """Prior of the top-level latent ``z [B, C, H, W]``: a Gaussian with a learned per-channel mean
    and log-std (``learn_top``, zero-initialised as in Glow), optionally shifted per class
    (``num_classes > 0``: a zero-initialised embedding of the label)."""

    def __init__(self, shape: tuple[int, int, int], learn_top: bool = True, num_classes: int = 0):
        super().__init__()
        self.shape = tuple(shape)
        c = self.shape[0]
        self.num_classes = num_classes
        self.top = nn.Parameter(torch.zeros(2 * c)) if learn_top else None
        if num_classes:
            self.class_embedding = nn.Embedding(num_classes, 2 * c)
            nn.init.zeros_(self.class_embedding.weight)

    def _params(self, n: int, y: torch.Tensor | None, device, dtype):
        c = self.shape[0]
        p = torch.zeros(n, 2 * c, device=device, dtype=dtype)
        if self.top is not None:
            p = p + self.top.to(dtype)
        if self.num_classes:
            if y is None:
                raise ValueError(f"this prior is class-conditional (num_classes={self.num_classes}); pass labels")
            if y.shape != (n,):
                raise ValueError(f"labels must have shape [{n}], got {tuple(y.shape)}")
            if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"labels must lie in [0, {self.num_classes}), got range [{int(y.min())}, {int(y.max())}]")
            p = p + self.class_embedding(y).to(dtype)
        p = p[:, :, None, None].expand(-1, -1, *self.shape[1:])
        return p[:, :c], p[:, c:]

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z [| y])``, ``[B]`` nats."""
        mean, log_std = self._params(z.shape[0], y, z.device, logdet_dtype(z))
        return gaussian_log_prob(z, mean, log_std)

    def sample(self, n: int, temperature: float = 1.0, y: torch.Tensor | None = None,
               device=None, dtype=torch.float32, generator: torch.Generator | None = None):
        """Draw ``[n, C, H, W]`` with the std scaled by ``temperature``."""
        mean, log_std = self._params(n, y, device, dtype)
        eps = torch.randn(mean.shape, generator=generator, device=device, dtype=dtype)
        return mean + log_std.exp() * temperature * eps




class LogisticPrior(nn.Module):
    """Standard logistic prior ``log p(z) = -sum(softplus(z) + softplus(-z))`` over ``[C, H, W]``,
    as used by NICE. Temperature scales the samples (the logistic's scale parameter).
    Optional per-class location shift (``num_classes > 0``, zero-initialised)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int = 0):
        super().__init__()
        self.shape = tuple(shape)
        self.num_classes = num_classes
        if num_classes:
            self.class_loc = nn.Embedding(num_classes, self.shape[0])
            nn.init.zeros_(self.class_loc.weight)

    def _loc(self, n: int, y: torch.Tensor | None, device, dtype):
        if not self.num_classes:
            return torch.zeros((), device=device, dtype=dtype)
        if y is None or y.shape != (n,):
            raise ValueError(f"this prior is class-conditional (num_classes={self.num_classes}); pass labels of shape [{n}]")
        if y.numel() and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got range [{int(y.min())}, {int(y.max())}]")
        return self.class_loc(y).to(dtype)[:, :, None, None]

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        dt = logdet_dtype(z)
        u = z.to(dt) - self._loc(z.shape[0], y, z.device, dt)
        return -(F.softplus(u) + F.softplus(-u)).flatten(1).sum(1)

    def sample(self, n: int, temperature: float = 1.0, y: torch.Tensor | None = None,
               device=None, dtype=torch.float32, generator: torch.Generator | None = None):
        u = torch.rand((n, *self.shape), generator=generator, device=device, dtype=dtype).clamp(1e-6, 1 - 1e-6)
        return self._loc(n, y, device, dtype) + temperature * (torch.log(u) - torch.log1p(-u))
