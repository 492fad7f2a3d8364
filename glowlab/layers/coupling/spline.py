"""Rational-quadratic spline coupling (neural spline flows) for images and vectors.

``y_b = RQS(x_b; θ(x_a))`` elementwise, ``y_a = x_a``, with the spline of
:func:`glowlab.layers.elementwise.splines.rational_quadratic`: ``bins`` bins on
``[-bound, bound]``, linear (identity) tails outside, derivative 1 at the edges. The network
outputs ``3 * bins - 1`` numbers per changed element. The inverse is exact (one closed-form root),
so ``inverse_kind = "analytic"``. ``ladj`` is ``[B]`` nats.

References:
    Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019.

Example:
    >>> import torch
    >>> f = SplineCoupling(4, hidden_channels=8, bins=4)
    >>> x = torch.randn(2, 4, 3, 3)
    >>> y, ladj = f(x)
    >>> x2, ladj_inv = f.inverse(y)
    >>> bool(torch.allclose(x, x2, atol=1e-5)), tuple(ladj.shape)
    (True, (2,))
    >>> v = SplineCoupling(6, hidden_channels=16, event_dim=1)  # vectors [B, D]
    >>> tuple(v(torch.randn(5, 6))[0].shape)
    (5, 6)
"""

from __future__ import annotations

import torch

from glowlab.layers.coupling.elementwise import ElementwiseCoupling
from glowlab.layers.elementwise.splines import (
    DEFAULT_MIN_DERIVATIVE,
    DEFAULT_MIN_HEIGHT,
    DEFAULT_MIN_WIDTH,
    rational_quadratic,
)

__all__ = ["SplineCoupling"]


class SplineCoupling(ElementwiseCoupling):
    """Rational-quadratic spline coupling (see the module docstring).

    Args:
        in_channels, hidden_channels, mask, parity, net, num_blocks, actnorm, cond_channels, event_dim:
            as in :class:`~glowlab.layers.coupling.elementwise.ElementwiseCoupling`.
        bins: number of bins K.
        bound: the spline acts on ``[-bound, bound]``, the identity outside.
        min_width, min_height: smallest bin as a fraction of ``2 * bound``.
        min_derivative: smallest derivative at a knot.
    """

    inverse_kind = "analytic"

    def __init__(self, in_channels: int, hidden_channels: int = 512, mask: str = "channel", parity: int = 0,
                 net: str | None = None, num_blocks: int = 2, actnorm: bool = True, cond_channels: int = 0,
                 event_dim: int = 3, bins: int = 8, bound: float = 3.0, min_width: float = DEFAULT_MIN_WIDTH,
                 min_height: float = DEFAULT_MIN_HEIGHT, min_derivative: float = DEFAULT_MIN_DERIVATIVE):
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        self.params_per_dim = 3 * bins - 1
        super().__init__(in_channels, hidden_channels, mask, parity, net, num_blocks, actnorm, cond_channels,
                         event_dim)
        self.bins, self.bound = bins, float(bound)
        self.min_width, self.min_height, self.min_derivative = min_width, min_height, min_derivative
        # validate the spline settings now rather than at the first batch
        z = torch.zeros(1, bins)
        rational_quadratic(torch.zeros(1), z, z, z[:, 1:], bound=self.bound, **self._limits())

    def _limits(self) -> dict:
        return {"min_width": self.min_width, "min_height": self.min_height, "min_derivative": self.min_derivative}

    def _transform(self, x: torch.Tensor, params: torch.Tensor, inverse: bool):
        k = self.bins
        widths, heights, derivatives = params[..., :k], params[..., k:2 * k], params[..., 2 * k:]
        return rational_quadratic(x, widths, heights, derivatives, inverse=inverse, bound=self.bound,
                                  **self._limits())
