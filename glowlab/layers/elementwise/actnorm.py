"""Activation normalisation with data-dependent initialisation (Kingma & Dhariwal, 2018)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from glowlab.core.bijection import Bijection, logdet_dtype

__all__ = ["ActNorm", "all_reduce_mean"]


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average ``t`` over all processes when ``torch.distributed`` is initialised, else return it.

    ActNorm calls this on its first-batch statistics, so under DDP every rank initialises to the
    same values (the statistics of the union of the ranks' first batches). Every rank must run the
    initialising forward pass, which is what happens when each rank trains its first batch.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


class ActNorm(Bijection):
    """Per-channel affine map ``y = (x + loc) * exp(log_scale)``.

    On the first forward pass in training mode, ``loc = -mean`` and ``log_scale = -log(std + eps)``
    of that batch, per channel, so the output has zero mean and unit variance. The statistics are
    averaged over processes (``all_reduce_mean``) so DDP ranks agree. ``initialized`` is a
    persistent buffer: a loaded state dict is never re-initialised.

    Shapes: ``x`` is ``[B, C, H, W]`` (or ``[B, C]``); logdet ``[B]`` nats, equal to
    ``H * W * sum(log_scale)``.

    Args:
        num_channels: C.
        eps: added to the std, so a constant channel (std 0) gives a finite scale ``1 / eps``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"ActNorm needs num_channels >= 1, got {num_channels}")
        self.num_channels = num_channels
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(num_channels))
        self.log_scale = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._known_initialized = False  # host-side mirror of the buffer: no device sync per step

    def is_initialized(self) -> bool:
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._known_initialized = False  # re-read the loaded flag on next use
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"ActNorm expects {self.num_channels} channels (input [B, {self.num_channels}, ...]), "
                f"got input of shape {tuple(x.shape)}"
            )

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set loc and log_scale from the batch ``x`` (statistics in float64, averaged over ranks)."""
        dims = [0] + list(range(2, x.dim()))
        xd = x.detach().double()
        moments = torch.stack([xd.mean(dims), (xd * xd).mean(dims)])
        moments = all_reduce_mean(moments)
        mean, sq = moments[0], moments[1]
        std = (sq - mean * mean).clamp_min(0).sqrt()
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self._known_initialized = True

    def forward(self, x: torch.Tensor, context=None):
        self._check(x)
        if self.training and not self.is_initialized():
            self.initialize(x)
        y = (x + self._view(self.loc, x)) * self._view(self.log_scale, x).exp()
        return y, self._ladj(x)

    def _ladj(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x[0, 0].numel()
        return (self.log_scale.to(logdet_dtype(x)).sum() * spatial).expand(x.shape[0])

    def inverse(self, y: torch.Tensor, context=None):
        self._check(y)
        return y * self._view(-self.log_scale, y).exp() - self._view(self.loc, y), -self._ladj(y)
