"""How the coupling models (Glow, RealNVP) build the context path to their coupling networks."""

from __future__ import annotations

from glowlab.core.context import ContextEmbedding

__all__ = ["coupling_context"]


def coupling_context(num_classes: int, context_features: int, condition_couplings: bool,
                     context_channels: int) -> ContextEmbedding | None:
    """The embedding that feeds a conditional model's context to its couplings as ``[B, K]``
    features (``K = context_channels``), or None when the model is unconditional or
    ``condition_couplings`` is off. A label gets a learned row; a tensor a linear map."""
    if not isinstance(condition_couplings, bool):
        raise ValueError(f"condition_couplings must be true or false, got {condition_couplings!r}")
    if not (num_classes or context_features) or not condition_couplings:
        return None
    return ContextEmbedding(num_classes, context_features, context_channels, owner="this model's couplings")
