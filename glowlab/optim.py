"""Optimisers for flow training, with the fast multi-tensor implementations chosen by default.

A Glow has hundreds of small parameter tensors (each flow step has an ActNorm, a 1x1 conv and a
coupling network), and PyTorch's default per-parameter ``for`` loop in ``Adam.step`` launches a
few small kernels for each. The fused kernel (Adam, AdamW) or the ``foreach`` kernels (Adamax,
which has no fused version) do the same update in a few launches: on 2 CPU cores the benchmark's
``small`` Glow trains at 273 instead of 255 images/s (``python scripts/bench.py --config small``
against ``--optimizer forloop``), and the gap grows with the number of parameter tensors.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["OPTIMIZERS", "IMPLEMENTATIONS", "check_optimizer", "make_optimizer"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW}
IMPLEMENTATIONS = ("auto", "fused", "foreach", "forloop")
_HAS_FUSED = ("adam", "adamw")


def check_optimizer(name: str, implementation: str = "auto") -> None:
    """Raise a ``ValueError`` naming the config key if the pair is not available."""
    if name not in OPTIMIZERS:
        raise ValueError(f"module.optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"module.optimizer_impl must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "fused" and name not in _HAS_FUSED:
        raise ValueError(f"module.optimizer={name} has no fused implementation in PyTorch; "
                         f"use module.optimizer_impl=foreach (or auto)")


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], *, lr: float, betas=(0.9, 0.999),
                   weight_decay: float = 0.0, implementation: str = "auto") -> torch.optim.Optimizer:
    """Build ``torch.optim.{Adam, Adamax, AdamW}`` over ``params``.

    Args:
        name: ``adam``, ``adamax`` or ``adamw``.
        implementation: ``auto`` (fused for Adam/AdamW where the device and PyTorch have the
            kernel, else ``foreach``; ``foreach`` for Adamax), ``fused``,
            ``foreach``, or ``forloop`` (PyTorch's per-parameter reference loop). All compute the
            same update up to floating-point rounding.
    """
    check_optimizer(name, implementation)
    params = list(params)
    if implementation == "auto":
        if name in _HAS_FUSED:
            try:
                return make_optimizer(name, params, lr=lr, betas=betas, weight_decay=weight_decay,
                                      implementation="fused")
            except (RuntimeError, ValueError):  # no fused kernel for this device or PyTorch (< 2.4 on the CPU)
                pass
        implementation = "foreach"
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}}[implementation]
    return OPTIMIZERS[name](params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **flags)
