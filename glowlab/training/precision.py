"""Whether bfloat16 is fast on this CPU, and a warning when a run picks it where it is not.

bf16 autocast on the CPU is fast only with native bf16 instructions (AVX-512 BF16, or AMX). On a
CPU without them (AVX2 only, e.g. many AMD EPYC and older Intel parts) PyTorch emulates bf16 by
converting to and from float32 around every operation: a small Glow then trains about 6 times
*slower* than in float32 (measured on an AVX2-only EPYC, issue 10). ``trainer.precision`` stays
``32-true`` by default: it is exact, and the fastest choice on such CPUs.

Example:
    >>> isinstance(cpu_has_native_bf16(), bool)
    True
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

__all__ = ["SLOW_BF16_MESSAGE", "cpu_has_native_bf16", "warn_if_slow_bf16"]

log = logging.getLogger(__name__)

SLOW_BF16_MESSAGE = (
    "trainer.precision={precision} on a CPU without native bfloat16 instructions (no AVX-512 BF16 or AMX): "
    "PyTorch emulates bf16 there, which makes training several times slower than float32 (about 6x for a "
    "small Glow on an AVX2-only CPU). Use trainer.precision=32-true on this machine"
)
_warned: set[str] = set()


def cpu_has_native_bf16() -> bool:
    """True when this CPU has AVX-512 BF16 or AMX tiles (both give PyTorch fast bf16 kernels)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def warn_if_slow_bf16(trainer: pl.Trainer) -> bool:
    """Log a warning (once per process and precision) when ``trainer`` runs bf16 on a CPU
    without native bf16; return whether it warned."""
    precision = str(getattr(trainer, "precision", ""))
    try:
        on_cpu = trainer.strategy.root_device.type == "cpu"
    except Exception:  # noqa: BLE001 - a strategy that cannot tell before launch: judge by the accelerator
        on_cpu = type(trainer.accelerator).__name__ == "CPUAccelerator"
    if not (precision.startswith("bf16") and on_cpu) or cpu_has_native_bf16():
        return False
    if precision not in _warned and trainer.is_global_zero:
        _warned.add(precision)
        log.warning(SLOW_BF16_MESSAGE.format(precision=precision))
    return True
