"""Transformers: the elementwise monotone maps an autoregressive layer applies to each dimension,
with parameters computed from the dimensions before it.

A transformer takes ``x`` (any shape ``S``) and its parameters ``[B, P, *S[1:]]`` (``P`` numbers per
element, on dimension 1, as :class:`~glowlab.layers.autoregressive.made.MADE` and
:class:`~glowlab.layers.autoregressive.masked_conv.MaskedConvNet` return them) and returns
``(y, log|dy/dx|)`` elementwise, both of shape ``S``; ``inverse`` returns ``(x, log|dx/dy|)``.
All-zero parameters give the identity.

Example:
    >>> import torch
    >>> t = AffineTransformer()
    >>> x, params = torch.randn(3, 4), torch.randn(3, 2, 4)
    >>> y, logd = t(x, params)
    >>> x2, logd_inv = t.inverse(y, params)
    >>> bool(torch.allclose(x, x2, atol=1e-6)), bool(torch.allclose(logd, -logd_inv))
    (True, True)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from glowlab.layers.elementwise.splines import rational_quadratic, spline_params_per_dim

__all__ = ["TRANSFORMERS", "AffineTransformer", "SplineTransformer", "make_transformer"]

#: Transformer names accepted by :func:`make_transformer` (and the layers' ``transformer=``).
TRANSFORMERS = ("affine", "spline")


class AffineTransformer(nn.Module):
    """``y = x · exp(s) + t`` with ``s = b · tanh(a / b)``, from parameters ``(t, a)`` (``P = 2``).

    **Why this scale.** ``s`` is a soft clamp of the raw output ``a`` to ``(-b, b)`` (``b =
    max_log_scale``, 3 by default): near 0 it is ``s ≈ a``, so the layer starts like the MAF
    paper's unconstrained ``exp(a)``; far from 0 it saturates, so

    * the scale can both *expand and contract* (``e^{-b} < exp(s) < e^{b}``). nflows' MAF uses
      ``sigmoid(a + 2) + 1e-3``, which (like Glow's coupling scale) can only contract in the
      data-to-noise direction, so data with a spread below that of the base density cannot be
      whitened by any one layer; the MAF paper's ``exp(a)`` is unbounded both ways and diverges
      easily in training;
    * the inverse (sampling) divides by at least ``e^{-b}``, so it cannot blow up on a tiny scale;
    * each dimension contributes at most ``b`` nats to the ladj, which keeps early training stable.

    zuko's MAF soft-clamps its log-scale the same way. ``s`` is computed in the dtype of ``x``.

    References:
        Papamakarios, Pavlakou, Murray, "Masked Autoregressive Flow for Density Estimation",
        NeurIPS 2017 (Section 3).
    """

    params_per_element = 2

    def __init__(self, max_log_scale: float = 3.0):
        super().__init__()
        if not (math.isfinite(max_log_scale) and max_log_scale > 0):
            raise ValueError(f"max_log_scale must be a positive finite number, got {max_log_scale!r}")
        self.max_log_scale = float(max_log_scale)

    def _shift_log_scale(self, params: torch.Tensor, x: torch.Tensor):
        shift, raw = params.to(x.dtype).unbind(1)
        b = self.max_log_scale
        return shift, b * torch.tanh(raw / b)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_log_scale(params, x)
        return x * log_scale.exp() + shift, log_scale

    def inverse(self, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_log_scale(params, y)
        return (y - shift) * (-log_scale).exp(), -log_scale


class SplineTransformer(nn.Module):
    """A monotonic rational-quadratic spline on ``[-bound, bound]`` with ``bins`` bins and identity
    (linear) tails outside it, ``P = 3 bins - 1`` parameters per element (unnormalised widths,
    heights and interior derivatives). The spline itself is
    :func:`glowlab.layers.elementwise.splines.rational_quadratic`; its inverse is exact.

    References:
        Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019.
    """

    def __init__(self, bins: int = 8, bound: float = 3.0):
        super().__init__()
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        self.bins, self.bound = bins, float(bound)
        self.params_per_element = spline_params_per_dim(bins)

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._spline(x, params, False)

    def inverse(self, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._spline(y, params, True)

    def _spline(self, x, params, inverse):
        p = params.movedim(1, -1)
        k = self.bins
        return rational_quadratic(x, p[..., :k], p[..., k:2 * k], p[..., 2 * k:], inverse=inverse, bound=self.bound)


def make_transformer(transformer: str = "affine", bins: int = 8, bound: float = 3.0,
                     max_log_scale: float = 3.0) -> nn.Module:
    """A transformer by name: ``"affine"`` (uses ``max_log_scale``) or ``"spline"`` (``bins``, ``bound``)."""
    if transformer == "affine":
        return AffineTransformer(max_log_scale)
    if transformer == "spline":
        return SplineTransformer(bins, bound)
    raise ValueError(f"transformer must be one of {TRANSFORMERS}, got {transformer!r}")
