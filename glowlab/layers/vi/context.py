"""Amortised parameters: a zero-initialised linear map from a ``context [B, C]`` to per-sample
shifts of a layer's free parameters (Rezende & Mohamed 2015 produce flow parameters from the
encoder's output; starting the shifts at zero makes every sample start from the shared ones).

Example:
    >>> import torch
    >>> from glowlab.layers.vi import Planar
    >>> f = Planar(2, context_features=3)
    >>> tuple(f.head(torch.randn(4, 3), 4).shape)  # per-sample shifts of (u, w, b): 2 + 2 + 1
    (4, 5)
    >>> Planar(2).head(torch.randn(4, 3), 4) is None  # not conditional: the context is ignored
    True
"""

from __future__ import annotations

import torch
from torch import nn

from glowlab.core import Bijection, ContextError, check_event

__all__ = ["ContextHead", "ForwardOnlyVectorLayer", "check_context", "check_features"]


def check_features(layer: nn.Module, features, minimum: int = 1) -> int:
    """Return ``features`` after checking that it is an integer ``>= minimum``; raise a ``ValueError``
    naming ``layer`` otherwise."""
    if isinstance(features, bool) or not isinstance(features, int) or features < minimum:
        raise ValueError(f"{type(layer).__name__} needs features >= {minimum} (the vector dimension D), "
                         f"got {features!r}")
    return features


def check_context(owner: str, context, batch: int | None, features: int) -> torch.Tensor:
    """Return ``context`` after checking that it is a floating ``[batch, features]`` tensor; raise
    :class:`~glowlab.core.ContextError` naming ``owner`` otherwise."""
    if not isinstance(context, torch.Tensor):
        raise ContextError(f"{owner} was built with context_features={features} and needs a context tensor "
                           f"[B, {features}] (an encoder's output), got {type(context).__name__}")
    if context.dim() != 2 or context.shape[1] != features or not context.is_floating_point():
        raise ContextError(f"{owner} expects a floating context of shape [B, {features}], got "
                           f"{tuple(context.shape)} ({context.dtype})")
    if batch is not None and context.shape[0] != batch:
        raise ContextError(f"{owner}: context has {context.shape[0]} rows for {batch} samples; pass one row per sample")
    return context


class ContextHead(nn.Module):
    """``context [B, C] -> [B, out_features]`` shifts (zero at initialisation), or ``None`` when
    the owning layer is not conditional (``context_features=None``; a context is then ignored)."""

    def __init__(self, owner: nn.Module, context_features: int | None, out_features: int):
        super().__init__()
        if context_features is not None and (isinstance(context_features, bool)
                                             or not isinstance(context_features, int) or context_features < 1):
            raise ValueError(f"context_features must be a positive integer or None, got {context_features!r}")
        self.owner = type(owner).__name__  # a name, not the module (that would nest it in itself)
        self.context_features = context_features
        self.linear = None
        if context_features is not None:
            self.linear = nn.Linear(context_features, out_features, bias=False)
            nn.init.zeros_(self.linear.weight)

    def forward(self, context, batch: int | None) -> torch.Tensor | None:
        if self.linear is None:
            return None
        return self.linear(check_context(self.owner, context, batch, self.context_features))


class ForwardOnlyVectorLayer(Bijection):
    """Base of the planar and radial layers: vectors ``[B, features]`` (``event_dim = 1``), no
    inverse (``inverse_kind = "none"``), optional amortisation through a :class:`ContextHead`
    giving ``head_features`` per-sample parameter shifts."""

    event_dim = 1
    inverse_kind = "none"

    def __init__(self, features: int, context_features: int | None, head_features: int):
        super().__init__()
        self.features = check_features(self, features)
        self.head = ContextHead(self, context_features, head_features)

    def check_input(self, z: torch.Tensor) -> None:
        """Raise a ``ValueError`` unless ``z`` is ``[B, features]``."""
        check_event(self, z, 1)
        if z.shape[1] != self.features:
            raise ValueError(f"{type(self).__name__} was built for D={self.features} features, got input of shape "
                             f"{tuple(z.shape)}")
