"""Channel masks of coupling layers: which channels are kept and which are transformed.

With ``C`` channels (features) and ``n_kept`` kept ones, ``parity=0`` keeps the first ``n_kept``
and transforms the rest; ``parity=1`` keeps the last ``n_kept`` and transforms the first
``C - n_kept``. Works on dim 1 of ``[B, C, H, W]`` images and ``[B, D]`` vectors alike.

Example:
    >>> import torch
    >>> x = torch.arange(5.0).view(1, 5)
    >>> kept, changed = split_channels(x, 2, parity=1)
    >>> kept.tolist(), changed.tolist()
    ([[3.0, 4.0]], [[0.0, 1.0, 2.0]])
    >>> bool(torch.equal(join_channels(kept, changed, parity=1), x))
    True
"""

from __future__ import annotations

import torch

__all__ = ["join_channels", "split_channels"]


def split_channels(x: torch.Tensor, n_kept: int, parity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, changed)`` along dim 1 (see the module docstring)."""
    if parity == 0:
        return x[:, :n_kept], x[:, n_kept:]
    n_changed = x.shape[1] - n_kept
    return x[:, n_changed:], x[:, :n_changed]


def join_channels(kept: torch.Tensor, changed: torch.Tensor, parity: int) -> torch.Tensor:
    """The inverse of :func:`split_channels`."""
    return torch.cat([kept, changed] if parity == 0 else [changed, kept], dim=1)
