"""One conditioning path: :class:`ContextEmbedding` turns a ``context`` into a ``[B, K]`` feature.

``context`` is what a model is conditioned on: a class label ``[B]`` (long) or a tensor ``[B, F]``
(e.g. an encoder's output). Priors and coupling networks never read it raw: an embedding maps it to
the ``K`` features they take (a learned row per class, or a linear map of the tensor).

Example:
    >>> import torch
    >>> emb = ContextEmbedding(num_classes=3, features=4)
    >>> emb(torch.tensor([0, 2])).shape, emb.kind
    (torch.Size([2, 4]), 'label')
    >>> ContextEmbedding(context_features=5, features=2)(torch.randn(7, 5)).shape
    torch.Size([7, 2])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.core.errors import ContextError

__all__ = ["ContextEmbedding", "context_kind"]


def context_kind(num_classes: int = 0, context_features: int = 0) -> str | None:
    """``"label"`` (class labels ``[B]``), ``"tensor"`` (``[B, F]``) or None (unconditional)."""
    return "label" if num_classes else "tensor" if context_features else None


class ContextEmbedding(nn.Module):
    """``context -> [B, features]``: an embedding table for labels, a linear map for tensors.

    Its parameters are ``weight`` (``[num_classes, features]`` for labels, ``[features, F]`` for
    tensors) and, for tensors, ``bias``, the keys ``nn.Embedding`` and ``nn.Linear`` use, so a model
    that held one of those loads into this.

    Args:
        num_classes: > 0: the context is a label in ``[0, num_classes)``, shape ``[B]``.
        context_features: > 0 (and ``num_classes == 0``): the context is a float ``[B, F]``.
        features: K, the width of the output.
        zero_init: start at zero (a prior's shift that starts as the unconditional prior).
        owner: a name used in error messages.
    """

    def __init__(self, num_classes: int = 0, context_features: int = 0, features: int = 16,
                 zero_init: bool = False, owner: str = "this model"):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("context_features", context_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if num_classes and context_features:
            raise ValueError(f"give num_classes (labels) or context_features (a tensor), not both: got "
                             f"num_classes={num_classes} and context_features={context_features}")
        if not (num_classes or context_features):
            raise ValueError("ContextEmbedding needs num_classes > 0 (labels) or context_features > 0 (a tensor)")
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive integer, got {features!r}")
        self.num_classes, self.context_features = num_classes, context_features
        self.features, self.owner = features, owner
        if num_classes:
            self.weight = nn.Parameter(torch.randn(num_classes, features))
        else:
            layer = nn.Linear(context_features, features)
            self.weight, self.bias = layer.weight, layer.bias
        if zero_init:
            for p in self.parameters():
                nn.init.zeros_(p)

    @property
    def kind(self) -> str:
        return context_kind(self.num_classes, self.context_features)

    def check(self, context, batch: int | None = None) -> torch.Tensor:
        """Return ``context`` after checking it; :class:`ContextError` (a ``ValueError``) names what
        is wrong and what to pass."""
        if self.num_classes:
            if context is None:
                raise ContextError(f"{self.owner} is class-conditional (num_classes={self.num_classes}); pass labels "
                                   f"as context=y, a long tensor [B]")
            if not isinstance(context, torch.Tensor) or context.is_floating_point() or context.dim() != 1 or (
                    batch is not None and context.shape[0] != batch):
                got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
                raise ContextError(f"labels must be a long tensor of shape [{batch if batch is not None else 'B'}], "
                                   f"got {got}")
            if context.numel() and (context.min() < 0 or context.max() >= self.num_classes):
                raise ContextError(f"labels must lie in [0, {self.num_classes}), got range [{int(context.min())}, "
                                   f"{int(context.max())}]")
            return context
        if not isinstance(context, torch.Tensor) or not context.is_floating_point() or context.dim() != 2 or (
                context.shape[1] != self.context_features) or (batch is not None and context.shape[0] != batch):
            got = tuple(context.shape) if isinstance(context, torch.Tensor) else context
            raise ContextError(f"{self.owner} is conditional on a tensor: pass context of shape "
                               f"[{batch if batch is not None else 'B'}, {self.context_features}] (float), got {got}")
        return context

    def forward(self, context, batch: int | None = None) -> torch.Tensor:
        context = self.check(context, batch)
        if self.num_classes:
            return F.embedding(context, self.weight)
        return F.linear(context.to(self.weight.dtype), self.weight, self.bias)

    def extra_repr(self) -> str:
        source = f"num_classes={self.num_classes}" if self.num_classes else f"context_features={self.context_features}"
        return f"{source}, features={self.features}"
