"""RealNVP-style affine coupling on vectors ``[B, D]``, optionally conditioned on a context.

Math:
    Split ``x`` into a kept part ``x_a`` and a changed part ``x_b`` (``parity`` says which half is
    kept). With ``(s̃, t) = NN([x_a, context])`` and the soft clamp ``s = c·tanh(s̃ / c)``::

        y_a = x_a,    y_b = x_b · exp(s) + t,    log|det ∂y/∂x| = Σ s     (nats, per sample)

    and the inverse is ``x_b = (y_b − t) · exp(−s)``: a closed form (``inverse_kind="analytic"``).
    The network's last layer is zero-initialised, so the layer starts at the identity.

References:
    L. Dinh, J. Sohl-Dickstein and S. Bengio, "Density estimation using Real NVP", ICLR 2017.

Example:
    >>> import torch
    >>> from glowlab.layers.vi import VectorAffineCoupling
    >>> f = VectorAffineCoupling(3, hidden_features=8)
    >>> x = torch.randn(4, 3)
    >>> y, ladj = f(x)
    >>> x_back, ladj_inv = f.inverse(y)
    >>> bool(torch.allclose(x, x_back)), bool(torch.allclose(ladj, -ladj_inv))
    (True, True)
"""

from __future__ import annotations

import torch

from glowlab.core import Bijection, check_event, logdet_dtype
from glowlab.layers.coupling.nets import MLP
from glowlab.layers.vi.context import check_context, check_features

__all__ = ["VectorAffineCoupling"]


class VectorAffineCoupling(Bijection):
    """Affine coupling of vectors (see the module docstring).

    Args:
        features: ``D >= 2``.
        hidden_features, hidden_layers: the coupling network (:class:`glowlab.layers.coupling.nets.MLP`,
            zero-initialised output).
        parity: 0 keeps the first ``D // 2`` coordinates and changes the rest; 1 the reverse.
        context_features: width ``C`` of a ``context [B, C]`` fed to the network, or ``None``.
        scale_clamp: ``c`` of the soft clamp on the log-scale, ``|s| < c``.
    """

    event_dim = 1
    inverse_kind = "analytic"

    def __init__(self, features: int, hidden_features: int = 64, hidden_layers: int = 2, parity: int = 0,
                 context_features: int | None = None, scale_clamp: float = 3.0):
        super().__init__()
        check_features(self, features, minimum=2)
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}")
        if not scale_clamp > 0:
            raise ValueError(f"scale_clamp must be > 0, got {scale_clamp!r}")
        half = features // 2
        self.features, self.parity, self.scale_clamp = features, parity, float(scale_clamp)
        self.sizes = (half, features - half) if parity == 0 else (features - half, half)
        self.context_features = context_features
        self.net = MLP(self.sizes[0] + (context_features or 0), 2 * self.sizes[1], hidden_features, hidden_layers)

    def _split(self, x: torch.Tensor):
        first, second = x.split([self.sizes[0], self.sizes[1]] if self.parity == 0 else
                                [self.sizes[1], self.sizes[0]], dim=1)
        return (first, second) if self.parity == 0 else (second, first)

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([kept, changed] if self.parity == 0 else [changed, kept], dim=1)

    def _scale_shift(self, kept: torch.Tensor, context):
        inp = kept
        if self.context_features is not None:
            context = check_context(type(self).__name__, context, kept.shape[0], self.context_features)
            inp = torch.cat([kept, context.to(kept.dtype)], dim=1)
        raw_s, t = self.net(inp).chunk(2, dim=1)
        s = self.scale_clamp * torch.tanh(raw_s / self.scale_clamp)
        return s, t

    def _check(self, x: torch.Tensor) -> None:
        check_event(self, x, 1)
        if x.shape[1] != self.features:
            raise ValueError(f"VectorAffineCoupling was built for D={self.features}, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, context=None):
        self._check(x)
        kept, changed = self._split(x)
        s, t = self._scale_shift(kept, context)
        y = self._join(kept, changed * torch.exp(s) + t)
        return y, s.to(logdet_dtype(x)).sum(1)

    def inverse(self, y: torch.Tensor, context=None):
        self._check(y)
        kept, changed = self._split(y)
        s, t = self._scale_shift(kept, context)
        x = self._join(kept, (changed - t) * torch.exp(-s))
        return x, -s.to(logdet_dtype(y)).sum(1)
