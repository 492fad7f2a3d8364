"""Optimisers for flow training, with PyTorch's fast multi-tensor kernels chosen by default.

A Glow has hundreds of small parameter tensors (each flow step has an ActNorm, a 1x1 conv and a
coupling network), and PyTorch's per-parameter ``for`` loop in ``Adam.step`` launches a few small
kernels for each. The fused kernel (Adam, AdamW) or the ``foreach`` kernels (Adamax, which has no
fused version) do the same update in a few launches. In two runs of the benchmark on 2 CPU cores
the ``small`` Glow trained at 261.5 images/s with fused Adam and at 252.9 with the loop, while the
plain baseline in the same runs measured 228.0 and 226.9 (``python scripts/bench.py --config
small --baseline`` and the same with ``--optimizer forloop``; ``docs/bench/small*.json``).

The kernel chosen when the optimiser is built also holds after ``load_state_dict``: PyTorch would
otherwise take the ``fused``/``foreach`` flags from the checkpoint's parameter groups, so a
resumed run would silently switch kernels (or fail on a device without the saved one).

Every optimiser built here also bumps its parameters' autograd version counters after each step
(:func:`track_in_place_updates`): the fused kernels update parameters in place without doing so,
and caches keyed on the version counters (the eval weights of the 1x1 convolutions,
:mod:`glowlab.layers.linear.invconv`) would otherwise serve stale values. The hook belongs to that
optimiser alone; nothing is registered process-wide.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.autograd.graph import increment_version

__all__ = ["OPTIMIZERS", "IMPLEMENTATIONS", "check_optimizer", "make_optimizer", "track_in_place_updates"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW}
IMPLEMENTATIONS = ("auto", "fused", "foreach", "forloop")
_HAS_FUSED = ("adam", "adamw")
_KERNEL_FLAGS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}}


def check_optimizer(name: str, implementation: str = "auto", fused_ok: bool = True) -> None:
    """Raise a ``ValueError`` naming the config key if the pair is not available."""
    if name not in OPTIMIZERS:
        raise ValueError(f"module.optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"module.optimizer_impl must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if implementation == "fused" and name not in _HAS_FUSED:
        raise ValueError(f"module.optimizer={name} has no fused implementation in PyTorch; "
                         f"use module.optimizer_impl=foreach (or auto)")
    if implementation == "fused" and not fused_ok:
        raise ValueError("module.optimizer_impl=fused does not work with trainer.precision=16-mixed "
                         "(Lightning unscales and clips fp16 gradients outside the fused kernel); "
                         "use module.optimizer_impl=foreach (or auto)")


def _fused_supported(params: list[torch.nn.Parameter]) -> bool:
    """Whether PyTorch has a fused Adam kernel for every parameter's device and dtype (it checks
    only at the first ``step()``, too late to fall back)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # private helper: assume the common devices
        devices = {"cpu", "cuda"}
    return all(p.is_floating_point() and p.device.type in devices for p in params)


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], *, lr: float, betas=(0.9, 0.999),
                   weight_decay: float = 0.0, implementation: str = "auto",
                   fused_ok: bool = True) -> torch.optim.Optimizer:
    """Build ``torch.optim.{Adam, Adamax, AdamW}`` over ``params``.

    Args:
        name: ``adam``, ``adamax`` or ``adamw``.
        implementation: ``auto`` (fused for Adam/AdamW where the parameters' devices have the
            kernel, else ``foreach``; ``foreach`` for Adamax), ``fused``, ``foreach``, or
            ``forloop`` (PyTorch's per-parameter reference loop). All compute the same update up
            to floating-point rounding.
        fused_ok: ``False`` under fp16 mixed precision with Lightning's gradient scaler, which
            unscales, clips and skips steps outside the optimiser: ``auto`` then picks ``foreach``.
    """
    check_optimizer(name, implementation, fused_ok)
    params = list(params)
    if implementation == "auto":
        use_fused = name in _HAS_FUSED and fused_ok and _fused_supported(params)
        implementation = "fused" if use_fused else "foreach"
    opt = OPTIMIZERS[name](params, lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                           **_KERNEL_FLAGS[implementation])
    opt.register_load_state_dict_pre_hook(_keep_kernel_flags)
    track_in_place_updates(opt)
    return opt


def track_in_place_updates(optimizer: torch.optim.Optimizer):
    """Make every ``optimizer.step()`` bump the version counters of the parameters it holds.

    PyTorch's fused kernels (``Adam(..., fused=True)``) write the new values in place without
    bumping them, so a cache keyed on ``p._version`` cannot see the step. This registers a step
    post-hook on this optimiser only (``Optimizer.register_step_post_hook``); :func:`make_optimizer`
    calls it for you. Returns the hook's handle (``.remove()`` undoes it).

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.Adam([p], lr=0.1, fused=True)
        >>> _ = track_in_place_updates(opt)
        >>> p.grad = torch.ones(2)
        >>> before = p._version
        >>> opt.step()
        >>> p._version > before
        True
    """
    return optimizer.register_step_post_hook(_bump_versions)


def _bump_versions(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if params:
        increment_version(params)


def _keep_kernel_flags(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """``load_state_dict`` pre-hook: the loaded groups keep this optimiser's kernel choice."""
    kernel = {k: optimizer.defaults[k] for k in ("fused", "foreach") if k in optimizer.defaults}
    return {**state_dict, "param_groups": [{**group, **kernel} for group in state_dict["param_groups"]]}
