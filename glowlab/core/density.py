"""The density contract: every model in glowlab is a probability density.

A :class:`Density` over events of shape ``event_shape`` provides

* ``log_prob(x, context=None) -> [B]``: ``log p(x | context)`` in nats per sample;
* ``sample(n, context=None, temperature=1.0) -> [n, *event_shape]``: draws without a graph;
* ``rsample_and_log_prob(n, context=None) -> (x, log_prob)``: differentiable draws (the
  reparameterisation trick) with their log-density, what variational inference needs.

``temperature`` scales the standard deviation of the base distribution (Glow's sampling
temperature); 1.0 samples the density itself. ``context`` is what the density is conditioned on: a
class label ``[B]`` (long) or a tensor ``[B, ...]``. For ``sample`` and ``rsample_and_log_prob`` a
context holds one row per draw, so ``n`` must equal its batch size.

:class:`FlowDensity` is a base density pushed through a bijection that maps data to latent:
``log p(x) = log p_base(f(x)) + log|det ∂f/∂x|``.

Example:
    >>> import torch
    >>> from glowlab.core import Compose, FlowDensity, StandardNormal
    >>> d = FlowDensity(StandardNormal((2,)), Compose([]))
    >>> x, lp = d.rsample_and_log_prob(4)
    >>> bool(torch.allclose(lp, d.log_prob(x)))
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn

from glowlab.core.bijection import Bijection, logdet_dtype
from glowlab.core.errors import ContextError

__all__ = ["Density", "StandardNormal", "FlowDensity", "context_batch"]

_LOG_2PI = math.log(2 * math.pi)


def context_batch(n: int, context) -> int:
    """Check that a sampling ``context`` has ``n`` rows (or is None) and return ``n``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of samples must be a positive integer, got n={n!r}")
    if isinstance(context, torch.Tensor) and context.shape[0] != n:
        raise ContextError(f"context has {context.shape[0]} rows but {n} samples were asked for; "
                           f"pass one context row per sample")
    return n


class Density(nn.Module):
    """Base class of every model. Subclasses implement :meth:`log_prob` and
    :meth:`rsample_and_log_prob`; :meth:`sample` defaults to the latter without a graph."""

    event_shape: tuple[int, ...] = ()
    #: > 0: conditioned on class labels ``[B]`` (long) in ``[0, num_classes)``.
    num_classes: int = 0
    #: > 0: conditioned on a float tensor ``[B, context_features]``.
    context_features: int | None = 0

    @property
    def context_kind(self) -> str | None:
        """What ``context`` this density takes: ``"label"``, ``"tensor"`` or None (unconditional)."""
        return "label" if self.num_classes else "tensor" if self.context_features else None

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def rsample_and_log_prob(self, n: int, context=None, temperature: float = 1.0):  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, context=None, temperature: float = 1.0) -> torch.Tensor:
        return self.rsample_and_log_prob(n, context, temperature)[0]


class StandardNormal(Density):
    """``N(0, I)`` over events of shape ``event_shape``; ``log_prob`` is ``[B]`` nats, computed in
    float32 or wider. It has no parameters; a buffer tracks the device and dtype of the model."""

    def __init__(self, event_shape):
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        x = x.to(logdet_dtype(x))
        return -0.5 * (x.square() + _LOG_2PI).flatten(1).sum(1)

    def rsample_and_log_prob(self, n: int, context=None, temperature: float = 1.0):
        context_batch(n, context)
        eps = torch.randn((n, *self.event_shape), device=self._anchor.device, dtype=self._anchor.dtype)
        x = eps * temperature
        return x, self.log_prob(x)


class FlowDensity(Density):
    """``base`` pushed through the inverse of ``transform`` (which maps data to latent).

    * ``log_prob(x) = base.log_prob(z) + ladj`` with ``(z, ladj) = transform(x)``;
    * ``rsample_and_log_prob``: ``z ~ base``, ``(x, ladj_inv) = transform.inverse(z)`` and
      ``log p(x) = log p_base(z) - ladj_inv``.

    ``transform`` may be conditional; ``context`` reaches it and the base.
    Use :class:`~glowlab.core.Inverse` to put a forward-only layer on the sampling side.
    """

    def __init__(self, base: Density, transform: Bijection):
        super().__init__()
        self.base = base
        self.transform = transform
        self.event_shape = tuple(base.event_shape)

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        z, ladj = self.transform(x, context)
        return self.base.log_prob(z, context) + ladj

    def rsample_and_log_prob(self, n: int, context=None, temperature: float = 1.0):
        z, log_base = self.base.rsample_and_log_prob(n, context, temperature)
        x, ladj_inv = self.transform.inverse(z, context)
        return x, log_base - ladj_inv
