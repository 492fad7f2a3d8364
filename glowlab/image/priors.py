"""Priors of the latents of a multiscale model, on one base: :class:`LatentPrior`.

Every prior has the same two methods:

* ``log_prob(z, context=None) -> [B]``: ``log p(z | context)`` in nats per sample, summed over
  ``[C, H, W]`` and computed in float32 or wider;
* ``sample(n, context=None, temperature=1.0, device=None, dtype=None, generator=None)``: ``n``
  reparameterised (differentiable) draws, the scale multiplied by ``temperature``.

``context`` is what the prior is conditioned on. For the top priors (:class:`LearnedPrior`,
:class:`LogisticPrior`) it is the model's context (a class label ``[B]`` or a tensor ``[B, F]``,
through a zero-initialised :class:`~glowlab.core.context.ContextEmbedding`); for a multiscale
split (:class:`~glowlab.image.split.Split`) it is the kept half ``h`` the factored-out half is
conditioned on. :class:`GaussianPrior` is the base of the diagonal Gaussians (top and split):
subclasses give ``mean_and_log_std``.

Example:
    >>> import torch
    >>> prior = LearnedPrior((2, 4, 4), num_classes=3)
    >>> z = prior.sample(5, context=torch.tensor([0, 1, 2, 0, 1]), temperature=0.7)
    >>> prior.log_prob(z, torch.tensor([0, 1, 2, 0, 1])).shape
    torch.Size([5])

References:
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018
    (learned top prior, class-conditional prior, split prior, temperature).
    Dinh, Krueger & Bengio, "NICE", ICLR 2015 workshop (logistic prior).
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.core.bijection import logdet_dtype
from glowlab.core.context import ContextEmbedding

__all__ = [
    "GaussianPrior",
    "LatentPrior",
    "LearnedPrior",
    "LogisticPrior",
    "gaussian_log_prob",
    "legacy_context",
    "legacy_sample_args",
]

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(z; mean, exp(log_std)^2)`` summed over all but the batch dimension: ``[B]`` nats,
    computed in float32 or wider."""
    dt = logdet_dtype(z)
    z, mean, log_std = z.to(dt), mean.to(dt), log_std.to(dt)
    per_dim = -0.5 * (_LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-log_std)) ** 2)
    return per_dim.flatten(1).sum(1)


def legacy_sample_args(owner: str, context, temperature, **legacy):
    """Map the pre-0.2 call forms onto ``(context, temperature)``, with a ``DeprecationWarning``.

    * ``sample(n, T)`` and ``sample(n, T, labels)``: the temperature came second (now keyword
      ``temperature=``), the labels third (now ``context=``);
    * ``cond=`` / ``y=``: the old names of ``context``.
    """
    if isinstance(context, numbers.Real) and not isinstance(context, bool):
        warnings.warn(f"{owner}.sample(n, temperature, labels) is deprecated; call "
                      f"sample(n, context=labels, temperature=T)", DeprecationWarning, stacklevel=3)
        context, temperature = (temperature if temperature is None or isinstance(temperature, torch.Tensor)
                                else None), float(context)
    context = legacy_context(owner, context, **legacy)
    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (1.0 samples the model), got {temperature!r}")
    return context, float(temperature)


def legacy_context(owner: str, context, **legacy):
    """``context``, or the value of its deprecated name (``cond=``, ``y=``) with a ``DeprecationWarning``."""
    for name, value in legacy.items():
        if value is None:
            continue
        warnings.warn(f"{owner}: the keyword {name}= is deprecated; pass context=", DeprecationWarning, stacklevel=3)
        if context is not None:
            raise TypeError(f"{owner}: got both context= and its deprecated name {name}=; pass only context=")
        context = value
    return context


class LatentPrior(nn.Module):
    """Base of the priors of a multiscale model's latents (see the module docstring)."""

    #: > 0: conditioned on labels in ``[0, num_classes)``; ``context_features`` > 0: on a ``[B, F]`` tensor
    num_classes: int = 0
    context_features: int = 0

    def __init__(self):
        super().__init__()
        # tracks the model's device and dtype for parameter-free priors (not saved)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: torch.Tensor, context=None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _draw(self, n: int, context, temperature: float, device, dtype, generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(self, n: int, context=None, temperature: float = 1.0, device=None, dtype=None,
               generator: torch.Generator | None = None, *, y=None) -> torch.Tensor:
        """``n`` differentiable draws (the reparameterisation trick), scale times ``temperature``.
        ``device``/``dtype`` default to the prior's own."""
        context, temperature = legacy_sample_args(type(self).__name__, context, temperature, y=y)
        device = self._anchor.device if device is None else device
        dtype = self._anchor.dtype if dtype is None else dtype
        return self._draw(n, context, temperature, device, dtype, generator)


class GaussianPrior(LatentPrior):
    """A diagonal Gaussian ``N(mean, exp(log_std)^2)``; subclasses implement
    :meth:`mean_and_log_std`. Sampling draws ``mean + T * exp(log_std) * eps``."""

    def mean_and_log_std(self, n: int, context, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor, context=None, *, y=None) -> torch.Tensor:
        """``log p(z | context)``, ``[B]`` nats."""
        context = legacy_context(type(self).__name__, context, y=y)
        mean, log_std = self.mean_and_log_std(z.shape[0], context, z.device, logdet_dtype(z))
        return gaussian_log_prob(z, mean, log_std)

    def _draw(self, n, context, temperature, device, dtype, generator):
        mean, log_std = self.mean_and_log_std(n, context, device, dtype)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=dtype)
        return mean.to(dtype) + log_std.to(dtype).exp() * temperature * eps


class LearnedPrior(GaussianPrior):
    """Prior of the top latent ``z [B, C, H, W]``: a Gaussian with a learned per-channel mean and
    log-std (``learn_top``, zero-initialised as in Glow), shifted per context when the model is
    conditional (``num_classes > 0``: a row per class; ``context_features > 0``: a linear map of a
    ``[B, F]`` tensor; both zero-initialised, in ``class_embedding``)."""

    def __init__(self, shape: tuple[int, int, int], learn_top: bool = True, num_classes: int = 0,
                 context_features: int = 0):
        super().__init__()
        self.shape = self.event_shape = tuple(int(s) for s in shape)
        c = self.shape[0]
        self.num_classes, self.context_features = num_classes, context_features
        self.top = nn.Parameter(torch.zeros(2 * c)) if learn_top else None
        if num_classes or context_features:
            self.class_embedding = ContextEmbedding(num_classes, context_features, 2 * c, zero_init=True,
                                                    owner="this prior")

    def mean_and_log_std(self, n: int, context, device, dtype):
        c = self.shape[0]
        p = torch.zeros(n, 2 * c, device=device, dtype=dtype)
        if self.top is not None:
            p = p + self.top.to(dtype)
        if self.num_classes or self.context_features:
            p = p + self.class_embedding(context, n).to(dtype)
        p = p[:, :, None, None].expand(-1, -1, *self.shape[1:])
        return p[:, :c], p[:, c:]

    _params = mean_and_log_std  # the pre-0.2 name


class LogisticPrior(LatentPrior):
    """Standard logistic prior ``log p(z) = -sum(softplus(z) + softplus(-z))`` over ``[C, H, W]``,
    as used by NICE. Temperature scales the samples (the logistic's scale parameter). Optional
    per-context location shift (``num_classes`` or ``context_features``, zero-initialised)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int = 0, context_features: int = 0):
        super().__init__()
        self.shape = self.event_shape = tuple(int(s) for s in shape)
        self.num_classes, self.context_features = num_classes, context_features
        if num_classes or context_features:
            self.class_loc = ContextEmbedding(num_classes, context_features, self.shape[0], zero_init=True,
                                              owner="this prior")

    def _loc(self, n: int, context, device, dtype):
        if not (self.num_classes or self.context_features):
            return torch.zeros((), device=device, dtype=dtype)
        return self.class_loc(context, n).to(device=device, dtype=dtype)[:, :, None, None]

    def log_prob(self, z: torch.Tensor, context=None, *, y=None) -> torch.Tensor:
        """``log p(z | context)``, ``[B]`` nats."""
        context = legacy_context(type(self).__name__, context, y=y)
        dt = logdet_dtype(z)
        u = z.to(dt) - self._loc(z.shape[0], context, z.device, dt)
        return -(F.softplus(u) + F.softplus(-u)).flatten(1).sum(1)

    def _draw(self, n, context, temperature, device, dtype, generator):
        u = torch.rand((n, *self.shape), generator=generator, device=device, dtype=dtype).clamp(1e-6, 1 - 1e-6)
        return self._loc(n, context, device, dtype) + temperature * (torch.log(u) - torch.log1p(-u))
