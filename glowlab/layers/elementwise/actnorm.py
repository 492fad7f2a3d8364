"""Activation normalisation with data-dependent initialisation (Kingma & Dhariwal, 2018)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from glowlab.core.bijection import Bijection, logdet_dtype
from glowlab.core.data_init import DataDependentInit

__all__ = ["ActNorm", "all_reduce_mean", "DEFAULT_MIN_STD"]

#: Floor on the per-channel std at initialisation: the initial scale is at most 1 / DEFAULT_MIN_STD.
DEFAULT_MIN_STD = 1e-2


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


class ActNorm(DataDependentInit, Bijection):
    """Per-channel affine map ``y = (x + loc) * exp(log_scale)`` for vectors or images.

    On the first forward pass in training mode (:meth:`data_init`, the
    :class:`~glowlab.core.DataDependentInit` hook), ``loc = -mean`` and
    ``log_scale = -log(max(std, min_std) + eps)`` of that batch, per channel, so the output has
    zero mean and unit variance. The statistics are computed in float64 and averaged over
    processes (``all_reduce_mean``) so DDP ranks agree. ``initialized`` is a persistent buffer: a
    loaded state dict is never re-initialised.

    **Scale cap.** A channel whose std in the initialising batch is below ``min_std`` (a constant
    channel, a single sample) gets the scale ``1 / min_std`` instead of ``1 / std``: with the
    default ``min_std = 1e-2``, ``log_scale <= log(100) ≈ 4.6``. Without the cap a constant channel
    gets a scale of ``1 / eps = 1e6`` and later ordinary data a log-density of about ``-1e12``.
    **Non-finite data.** An initialising batch holding NaN or inf is refused with a ``ValueError``
    (initialising on it would poison the layer for good).

    Shapes: ``x`` is ``[B, C]`` (vectors) or ``[B, C, H, W]`` (images); ladj ``[B]`` nats, equal
    to ``H * W * sum(log_scale)`` (``sum(log_scale)`` for vectors).

    Args:
        num_channels: C (or D for vectors).
        eps: added to the std.
        min_std: floor on the std used at initialisation (the cap on the initial scale).
        event_dim: ``None`` (vectors and images), or 1 or 3 to accept only that layout.

    Example:
        >>> import torch
        >>> norm = ActNorm(2)
        >>> y, ladj = norm(torch.tensor([[1.0, 5.0], [3.0, 5.0]]))  # 2nd channel is constant
        >>> y.detach().round(decimals=3).tolist()
        [[-1.0, 0.0], [1.0, 0.0]]
        >>> round(norm.log_scale[1].item(), 3)  # capped at -log(min_std)
        4.605

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    event_dim = None

    def __init__(self, num_channels: int, eps: float = 1e-6, min_std: float = DEFAULT_MIN_STD,
                 event_dim: int | None = None):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"ActNorm needs num_channels >= 1, got {num_channels}")
        if not min_std > 0:
            raise ValueError(f"ActNorm needs min_std > 0, got {min_std!r}")
        if event_dim not in (None, 1, 3):
            raise ValueError(f"event_dim must be None, 1 (vectors [B, D]) or 3 (images [B, C, H, W]), "
                             f"got {event_dim!r}")
        self.num_channels = num_channels
        self.eps, self.min_std = eps, float(min_std)
        if event_dim is not None:
            self.event_dim = event_dim  # type: ignore[misc]  # per instance
        self.loc = nn.Parameter(torch.zeros(num_channels))
        self.log_scale = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(False))
        self._known_initialized = False  # host-side mirror of the buffer: no device sync per step

    def is_initialized(self) -> bool:
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    def needs_data_init(self) -> bool:
        return not self.is_initialized()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._known_initialized = False  # re-read the loaded flag on next use
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2))).to(x.dtype)

    def _check(self, x: torch.Tensor) -> None:
        dims_ok = x.dim() in (2, 4) if self.event_dim is None else x.dim() == self.event_dim + 1
        if not dims_ok or x.shape[1] != self.num_channels:
            layout = {None: "[B, C] or [B, C, H, W]", 1: "[B, C]", 3: "[B, C, H, W]"}[self.event_dim]
            raise ValueError(f"ActNorm expects {self.num_channels} channels as {layout} with C={self.num_channels}, "
                             f"got input of shape {tuple(x.shape)}")

    @torch.no_grad()
    def data_init(self, x: torch.Tensor, context=None) -> None:
        """Set loc and log_scale from the batch ``x`` (statistics in float64, averaged over ranks).

        Raises:
            ValueError: ``x`` holds NaN or inf (the message gives their count).
        """
        dims = [0] + list(range(2, x.dim()))
        xd = x.detach().double()
        bad_here = (~torch.isfinite(xd)).sum()
        # one all-reduce carries the moments and the non-finite count: under DDP every rank sees
        # the same count and refuses together (a rank raising alone would leave the others waiting)
        stats = all_reduce_mean(torch.cat([xd.mean(dims), (xd * xd).mean(dims), bad_here.double().view(1)]))
        if float(stats[-1]) > 0:
            where = f"{int(bad_here)} non-finite value(s) (NaN/inf) out of {x.numel()}"
            if not int(bad_here):
                where += " here, and some on another process"
            raise ValueError(
                f"ActNorm({self.num_channels}) cannot initialise on a batch with {where}: check the data pipeline "
                f"(dequantisation, normalisation) or the layers before it, and start training from a batch of "
                f"finite values"
            )
        moments = stats[:-1].view(2, -1)
        mean, sq = moments[0], moments[1]
        std = (sq - mean * mean).clamp_min(0).sqrt()
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(self.min_std) + self.eps))
        self.initialized.fill_(True)
        self._known_initialized = True

    def initialize(self, x: torch.Tensor) -> None:
        """Old name of :meth:`data_init`."""
        self.data_init(x)

    def forward(self, x: torch.Tensor, context=None):
        self._check(x)
        if self.training and not self.is_initialized():
            self.data_init(x)
        y = (x + self._view(self.loc, x)) * self._view(self.log_scale, x).exp()
        return y, self._ladj(x)

    def _ladj(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x[0, 0].numel()
        return (self.log_scale.to(logdet_dtype(x)).sum() * spatial).expand(x.shape[0])

    def inverse(self, y: torch.Tensor, context=None):
        self._check(y)
        return y * self._view(-self.log_scale, y).exp() - self._view(self.loc, y), -self._ladj(y)
