"""Time-conditioned networks ``f(t, z, context)`` for the dynamics of continuous flows.

A continuous normalizing flow moves a point along ``dz/dt = f(t, z)``. The network ``f`` must be
smooth in ``z`` (its Jacobian enters the log-density) and cheap to differentiate, so these nets use
smooth activations (softplus by default, as FFJORD) and inject the time ``t`` at every layer:

* ``"concat"``: ``t`` is appended to the layer's input as one more feature (a constant channel for
  images), then a linear map / convolution is applied;
* ``"concatsquash"``: ``layer(z) * sigmoid(a t + b) + c t``: a time-dependent gate and shift.

:class:`ODEMLP` is for vectors ``[B, D]`` and may be conditioned on a context vector ``[B, K]``;
:class:`ODEConvNet` is for images ``[B, C, H, W]`` (3x3 convolutions, same spatial size).
No normalisation layer mixes samples, so each sample's trajectory depends on itself only.

References:
    Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud, "FFJORD: Free-form Continuous Dynamics for
    Scalable Reversible Generative Models", ICLR 2019 (``lib/layers/diffeq_layers`` in its code).

Example:
    >>> import torch
    >>> net = ODEMLP(features=2, hidden_features=(16, 16))
    >>> net(torch.tensor(0.5), torch.randn(4, 2)).shape
    torch.Size([4, 2])
    >>> conv = ODEConvNet(channels=1, hidden_channels=(8,))
    >>> conv(torch.tensor(0.0), torch.randn(2, 1, 4, 4)).shape
    torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from glowlab.core import ContextError

__all__ = [
    "ACTIVATIONS",
    "LAYER_TYPES",
    "ODEMLP",
    "ConcatConv2d",
    "ConcatLinear",
    "ConcatSquashConv2d",
    "ConcatSquashLinear",
    "ODEConvNet",
]

#: Smooth activations: the dynamics' Jacobian must be continuous for the solvers and the trace.
ACTIVATIONS = {"softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}
LAYER_TYPES = ("concat", "concatsquash")


def _time_column(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` (a scalar) as a ``[B, 1]`` column of ``x``'s dtype and device."""
    return t.to(x).reshape(1, 1).expand(x.shape[0], 1)


class ConcatLinear(nn.Module):
    """``W [z, t] + b``: a linear map of the input with the time appended. ``[B, in] -> [B, out]``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features + 1, out_features)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([x, _time_column(t, x)], dim=1))


class ConcatSquashLinear(nn.Module):
    """``(W z + b) * sigmoid(a t + c) + d t``: a linear map gated and shifted by the time."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(1, out_features)
        self.shift = nn.Linear(1, out_features, bias=False)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tc = _time_column(t, x)
        return self.linear(x) * torch.sigmoid(self.gate(tc)) + self.shift(tc)


class ConcatConv2d(nn.Module):
    """A 3x3 convolution of the input with ``t`` appended as a constant channel (FFJORD's
    ``ConcatConv2d``). ``[B, C_in, H, W] -> [B, C_out, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = t.to(x).reshape(1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([x, tt], dim=1))


class ConcatSquashConv2d(nn.Module):
    """``conv(z) * sigmoid(a t + c) + d t`` with per-channel gate and shift."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.gate = nn.Linear(1, out_channels)
        self.shift = nn.Linear(1, out_channels, bias=False)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tc = _time_column(t, x)
        return self.conv(x) * torch.sigmoid(self.gate(tc))[:, :, None, None] + self.shift(tc)[:, :, None, None]


def _check_choices(layer_type: str, activation: str) -> None:
    if layer_type not in LAYER_TYPES:
        raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {layer_type!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} (smooth ones: the dynamics' Jacobian "
                         f"must be continuous), got {activation!r}")


class _TimeStack(nn.Module):
    """Time-conditioned layers with an activation between them (none after the last)."""

    def __init__(self, layers: list[nn.Module], activation: str):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.act = ACTIVATIONS[activation]()

    def run(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


class ODEMLP(_TimeStack):
    """Dynamics for vectors: ``f(t, z [B, D], context [B, K] | None) -> [B, D]``.

    Args:
        features: D.
        hidden_features: widths of the hidden layers, e.g. ``(64, 64)``.
        context_features: K > 0 appends a context vector ``[B, K]`` to the input of the first layer.
        layer_type: ``"concat"`` (default) or ``"concatsquash"`` (see the module docstring). On 8x8
            digits the concat-squash gate (about 0.5 at initialisation) made early training slower.
        activation: ``"softplus"`` (default), ``"tanh"``, ``"elu"`` or ``"silu"``.
    """

    def __init__(self, features: int, hidden_features: Sequence[int] = (64, 64), context_features: int = 0,
                 layer_type: str = "concat", activation: str = "softplus"):
        _check_choices(layer_type, activation)
        if features < 1:
            raise ValueError(f"features must be positive, got {features}")
        layer = ConcatLinear if layer_type == "concat" else ConcatSquashLinear
        widths = [features + context_features, *[int(h) for h in hidden_features], features]
        super().__init__([layer(a, b) for a, b in itertools.pairwise(widths)], activation)
        self.features = features
        self.context_features = context_features

    def forward(self, t: torch.Tensor, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.context_features:
            if not isinstance(context, torch.Tensor) or context.shape != (z.shape[0], self.context_features):
                got = None if context is None else tuple(getattr(context, "shape", ()))
                raise ContextError(f"this ODE net is conditional (context_features={self.context_features}): pass a "
                                   f"context of shape [{z.shape[0]}, {self.context_features}], got {got}")
            z = torch.cat([z, context.to(z)], dim=1)
        return self.run(t, z)


class ODEConvNet(_TimeStack):
    """Dynamics for images: ``f(t, z [B, C, H, W]) -> [B, C, H, W]`` from 3x3 convolutions.

    Args:
        channels: C.
        hidden_channels: widths of the hidden convolutions, e.g. ``(64, 64, 64)`` as FFJORD's
            multiscale models.
        layer_type: ``"concat"`` (default, FFJORD's image models) or ``"concatsquash"``.
        activation: ``"softplus"`` (default), ``"tanh"``, ``"elu"`` or ``"silu"``.
    """

    def __init__(self, channels: int, hidden_channels: Sequence[int] = (64, 64, 64), layer_type: str = "concat",
                 activation: str = "softplus"):
        _check_choices(layer_type, activation)
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        layer = ConcatConv2d if layer_type == "concat" else ConcatSquashConv2d
        widths = [channels, *[int(h) for h in hidden_channels], channels]
        super().__init__([layer(a, b) for a, b in itertools.pairwise(widths)], activation)
        self.channels = channels

    def forward(self, t: torch.Tensor, z: torch.Tensor, context=None) -> torch.Tensor:
        return self.run(t, z)

