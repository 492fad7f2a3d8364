"""Exponential moving average (Polyak) of a model's parameters."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA(nn.Module):
    """Keeps ``shadow = decay * shadow + (1 - decay) * param`` for every floating parameter.

    The shadow copies are buffers of this module, so they are saved in and restored from
    checkpoints with the rest of the LightningModule. They start as a copy of the parameters at
    the first :meth:`update` (after ActNorm's data-dependent initialisation has run).
    Buffers of the model (e.g. ActNorm's ``initialized`` flag) are not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self._names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
        for i, name in enumerate(self._names):
            self.register_buffer(f"shadow_{i}", torch.zeros_like(model.get_parameter(name)))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _pairs(self, model: nn.Module):
        for i, name in enumerate(self._names):
            yield getattr(self, f"shadow_{i}"), model.get_parameter(name)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        first = int(self.num_updates) == 0
        for shadow, p in self._pairs(model):
            if first:
                shadow.copy_(p)
            else:
                shadow.lerp_(p.detach(), 1.0 - self.decay)
        self.num_updates += 1

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """Temporarily load the averaged weights into ``model`` (no-op before the first update)."""
        if int(self.num_updates) == 0:
            yield
            return
        backup = [p.detach().clone() for _, p in self._pairs(model)]
        with torch.no_grad():
            for shadow, p in self._pairs(model):
                p.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), b in zip(self._pairs(model), backup):
                    p.copy_(b)
