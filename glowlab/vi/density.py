"""Variational densities: a diagonal Gaussian pushed through a flow in the sampling direction.

``q(x) = q₀(z) · |det ∂f/∂z|⁻¹`` with ``z ~ q₀ = N(μ, diag σ²)`` and ``x = f(z) = f_K ∘ … ∘ f_1(z)``:

    ``log q(x) = log q₀(z) − Σ_k log|det ∂f_k/∂z_{k−1}|``    (nats, per sample).

:class:`VariationalFlow` is a :class:`~glowlab.core.FlowDensity` whose transform is
``Inverse(f)``, so ``rsample_and_log_prob`` runs ``f`` forward (one pass for every flow offered)
and ``log_prob(x)`` of an arbitrary ``x`` needs ``f``'s inverse: closed form for ``"realnvp"``,
``D`` passes for ``"iaf"``, unavailable for ``"planar"`` and ``"radial"``
(:class:`~glowlab.core.InverseNotAvailable`).

Amortised inference (VAEs): with ``context_features=C`` the base's ``(μ, log σ)`` are a linear
function of ``context [B, C]`` (an encoder's output) and every flow layer is conditioned on it
too (planar/radial: per-sample parameter shifts; coupling and IAF: the context is an input of
their networks). ``n`` draws then need ``n`` context rows.

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    D. P. Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.

Example:
    >>> import torch
    >>> from glowlab.vi import VariationalFlow
    >>> q = VariationalFlow(2, flow="planar", length=4)
    >>> x, log_q = q.rsample_and_log_prob(8)
    >>> tuple(x.shape), tuple(log_q.shape)
    ((8, 2), (8,))
    >>> amortised = VariationalFlow(2, flow="realnvp", length=2, context_features=5)
    >>> h = torch.randn(8, 5)
    >>> x, log_q = amortised.rsample_and_log_prob(8, context=h)
    >>> bool(torch.allclose(log_q, amortised.log_prob(x, context=h), atol=1e-5))
    True
"""

from __future__ import annotations

import math

import torch
from torch import nn

from glowlab.core import (
    Bijection,
    Compose,
    Density,
    FlowDensity,
    Inverse,
    context_batch,
    logdet_dtype,
)
from glowlab.layers.vi import Planar, Radial, VectorAffineCoupling, check_context

__all__ = ["FLOWS", "DiagonalNormal", "VariationalFlow", "build_sampler"]

#: Flow families a :class:`VariationalFlow` can use (``"diagonal"``: no flow layers).
FLOWS = ("diagonal", "planar", "radial", "realnvp", "iaf")
_LOG_2PI = math.log(2 * math.pi)


class DiagonalNormal(Density):
    """``N(μ, diag σ²)`` over vectors ``[B, D]``; ``log_prob`` is ``[B]`` nats.

    Without context, ``μ`` and ``log σ`` are parameters (start at 0, i.e. ``N(0, I)``; buffers
    when ``trainable=False``). With ``context_features=C`` they are ``Linear(C, 2D)(context)``.
    """

    def __init__(self, features: int, context_features: int | None = None, trainable: bool = True):
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"DiagonalNormal needs features >= 1, got {features!r}")
        self.event_shape = (features,)
        self.context_features = context_features
        if context_features is not None:
            self.head = nn.Linear(context_features, 2 * features)
        elif trainable:
            self.loc = nn.Parameter(torch.zeros(features))
            self.log_scale = nn.Parameter(torch.zeros(features))
        else:
            self.register_buffer("loc", torch.zeros(features))
            self.register_buffer("log_scale", torch.zeros(features))

    def loc_and_log_scale(self, context=None, n: int | None = None):
        """``(μ, log σ)``: ``[D]`` each, or ``[B, D]`` from a context."""
        if self.context_features is None:
            return self.loc, self.log_scale
        context = check_context(type(self).__name__, context, n, self.context_features)
        return self.head(context).chunk(2, dim=-1)

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        loc, log_scale = self.loc_and_log_scale(context, x.shape[0])
        dtype = logdet_dtype(x)
        eps = (x - loc).to(dtype) * torch.exp(-log_scale.to(dtype))
        return (-0.5 * (eps.square() + _LOG_2PI) - log_scale.to(dtype)).sum(-1)

    def rsample_and_log_prob(self, n: int, context=None, temperature: float = 1.0):
        context_batch(n, context)
        loc, log_scale = self.loc_and_log_scale(context, n)
        eps = torch.randn(n, self.event_shape[0], device=loc.device, dtype=loc.dtype) * temperature
        x = loc + torch.exp(log_scale) * eps
        return x, self.log_prob(x, context)


def build_sampler(flow: str, features: int, length: int, context_features: int | None = None,
                  hidden_features: int = 64, hidden_layers: int = 2) -> Compose:
    """``length`` layers of ``flow`` whose *forward* direction is the sampling one (``z -> x``).

    ``"realnvp"`` alternates the coupling's kept half; ``"iaf"`` uses MAF layers from
    :mod:`glowlab.layers.autoregressive` (MAF's one-pass direction is IAF's sampling direction),
    reversing the order every other layer.
    """
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; choose one of {FLOWS}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative integer (number of flow layers), got {length!r}")
    if flow == "diagonal" and length:
        raise ValueError(f"flow='diagonal' has no layers; set length=0 or pick a flow from {FLOWS[1:]}")
    layers: list[Bijection] = []
    for k in range(length):
        if flow == "planar":
            layers.append(Planar(features, context_features))
        elif flow == "radial":
            layers.append(Radial(features, context_features))
        elif flow == "realnvp":
            layers.append(VectorAffineCoupling(features, hidden_features, hidden_layers, parity=k % 2,
                                               context_features=context_features))
        else:
            from glowlab.layers.autoregressive import MaskedAutoregressive

            layers.append(MaskedAutoregressive((features,), hidden_features, hidden_layers,
                                               order="identity" if k % 2 == 0 else "reversed",
                                               context_features=context_features or 0))
    return Compose(layers)


class VariationalFlow(FlowDensity):
    """A diagonal Gaussian pushed through ``length`` layers of ``flow`` (see the module docstring).

    Args:
        features: dimension ``D`` of the samples ``[B, D]``.
        flow: one of :data:`FLOWS`.
        length: number of flow layers ``K`` (0 for ``"diagonal"``).
        context_features: amortised version: width ``C`` of the ``context [B, C]``; ``None``
            for a single fixed posterior (e.g. fitting a 2-D energy).
        hidden_features, hidden_layers: networks of ``"realnvp"`` and ``"iaf"`` layers.
        trainable_base: learn ``μ, log σ`` of the base (no context only).
    """

    def __init__(self, features: int, flow: str = "planar", length: int = 32, context_features: int | None = None,
                 hidden_features: int = 64, hidden_layers: int = 2, trainable_base: bool = True):
        base = DiagonalNormal(features, context_features, trainable_base)
        sampler = build_sampler(flow, features, length, context_features, hidden_features, hidden_layers)
        super().__init__(base, Inverse(sampler))
        self.flow, self.length, self.context_features = flow, length, context_features

    @property
    def sampler(self) -> Compose:
        """The flow ``f`` in its sampling direction (``z -> x``)."""
        return self.transform.bijection
