"""Per-level latents of a trained image density, and seeded sampling: how the analysis tools talk
to any glowlab model.

* Multiscale models (Glow, RealNVP, NICE: :class:`~glowlab.image.multiscale.MultiscaleFlow`)
  factor a latent out at every level: ``model(x, context) -> (zs, logdet)`` with ``zs`` a list,
  finest level first, and ``model.inverse(zs, context) -> x``.
* Any other unconditional :class:`~glowlab.core.FlowDensity` (MAF, IAF, FFJORD) is treated as a
  model with a single level: ``zs = [z]`` with ``(z, _) = model.transform(x)``.

The inverse of the latents of ``x`` is ``x`` again up to the flow's round-trip error (about 1e-6
in float32, 1e-12 in float64 for coupling flows; the tolerance of an ODE solve for FFJORD).

Example:
    >>> import torch
    >>> from glowlab.models import Glow
    >>> model = Glow(image_shape=(1, 8, 8), levels=2, depth=1, hidden_channels=8).eval()
    >>> x = torch.rand(3, 1, 8, 8) - 0.5
    >>> zs = encode_levels(model, x)
    >>> [tuple(z.shape) for z in zs]
    [(3, 2, 4, 4), (3, 8, 2, 2)]
    >>> bool((decode_levels(model, zs) - x).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from glowlab.core import FlowDensity
from glowlab.image.multiscale import MultiscaleFlow

__all__ = ["decode_levels", "draw", "encode_levels"]


def _check_supported(model: nn.Module, context) -> None:
    if isinstance(model, MultiscaleFlow):
        return
    if isinstance(model, FlowDensity) and context is None:
        return
    kind = "a conditional " if isinstance(model, FlowDensity) else ""
    raise TypeError(f"{kind}{type(model).__name__} has no per-level latents: latent-space tools need a multiscale "
                    f"model (Glow, RealNVP, NICE: model(x) -> (zs, logdet), model.inverse(zs)) or an unconditional "
                    f"FlowDensity (MAF, IAF, FFJORD)")


def encode_levels(model: nn.Module, x: Tensor, context=None) -> list[Tensor]:
    """The latents of images ``x`` ``[B, C, H, W]`` (model space), one ``[B, ...]`` per level."""
    _check_supported(model, context)
    if isinstance(model, MultiscaleFlow):
        zs, _ = model(x, context)
        return list(zs)
    z, _ = model.transform(x)
    return [z]


def decode_levels(model: nn.Module, zs: list[Tensor], context=None) -> Tensor:
    """The images ``[B, C, H, W]`` of per-level latents ``zs`` (the inverse of :func:`encode_levels`)."""
    _check_supported(model, context)
    if isinstance(model, MultiscaleFlow):
        return model.inverse(list(zs), context)
    if len(zs) != 1:
        raise ValueError(f"{type(model).__name__} has a single latent, got {len(zs)}")
    x, _ = model.transform.inverse(zs[0])
    return x


@torch.no_grad()
def draw(model: nn.Module, n: int, context=None, temperature: float = 1.0,
         generator: torch.Generator | None = None) -> Tensor:
    """``model.sample(n, context=context, temperature=temperature)`` whose noise comes from
    ``generator`` when one is given, for any glowlab density: one whose ``sample`` takes a
    ``generator`` gets it; otherwise the draw runs under a forked copy of the global RNG seeded with
    ``generator.initial_seed()``, so the global RNG is left as it was. The same seeded generator
    gives the same draws."""
    kwargs = {"context": context, "temperature": float(temperature)}
    if generator is None or "generator" in inspect.signature(model.sample).parameters:
        return model.sample(n, generator=generator, **kwargs) if generator is not None else model.sample(n, **kwargs)
    devices = [generator.device] if generator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(generator.initial_seed())
        return model.sample(n, **kwargs)
