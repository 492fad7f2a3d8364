"""Monotonic rational-quadratic splines with linear tails (neural spline flows), elementwise.

On ``[-B, B]`` the map is a monotonic piecewise rational-quadratic function through ``K + 1``
knots ``(x_k, y_k)`` with positive derivatives ``d_k`` at the knots; outside it is the identity
(derivative 1 at ``x_0 = y_0 = -B`` and ``x_K = y_K = B``, so value and derivative are continuous
at the tails' edges). In bin ``k`` with width ``w``, height ``h``, slope ``s = h / w`` and
``ξ = (x - x_k) / w ∈ [0, 1]``:

    y = y_k + h (s ξ² + d_k ξ(1-ξ)) / (s + δ ξ(1-ξ)),      δ = d_k + d_{k+1} - 2 s,
    dy/dx = s² (d_{k+1} ξ² + 2 s ξ(1-ξ) + d_k (1-ξ)²) / (s + δ ξ(1-ξ))².

The inverse solves the quadratic ``a ξ² + b ξ + c = 0`` in ``ξ`` with, for ``η = y - y_k``,
``a = h (s - d_k) + η δ``, ``b = h d_k - η δ`` and ``c = -s η``. Its root in ``[0, 1]`` is taken in
the form ``ξ = 2c / (-b - sqrt(b² - 4ac))``, which avoids the cancellation of the textbook formula
when ``a`` is small (the discriminant is non-negative and ``-b - sqrt(.) < 0`` whenever ``c < 0``).

Unconstrained parameters (e.g. a network's outputs) are turned into bins by
:func:`rational_quadratic`: widths and heights by a softmax floored at ``min_width`` /
``min_height`` of the interval, interior derivatives by a softplus floored at ``min_derivative``.
All-zero parameters give equal bins and unit derivatives: the identity.

References:
    Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019.
    Gregory and Delbourgo, "Piecewise rational quadratic interpolation to monotonic data", 1982.

Example:
    >>> import torch
    >>> x = torch.linspace(-4, 4, 9, dtype=torch.float64)
    >>> w, h, d = torch.randn(9, 5), torch.randn(9, 5), torch.randn(9, 4)
    >>> y, logd = rational_quadratic(x, w, h, d, bound=3.0)
    >>> x2, logd_inv = rational_quadratic(y, w, h, d, inverse=True, bound=3.0)
    >>> bool(torch.allclose(x, x2, atol=1e-10)), bool(torch.allclose(logd, -logd_inv))
    (True, True)
    >>> bool(y[0] == x[0]) and bool(logd[0] == 0)  # outside [-3, 3]: the identity
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_MIN_DERIVATIVE",
    "DEFAULT_MIN_HEIGHT",
    "DEFAULT_MIN_WIDTH",
    "rational_quadratic",
    "spline_params_per_dim",
]

DEFAULT_MIN_WIDTH = 1e-3
DEFAULT_MIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_params_per_dim(bins: int) -> int:
    """How many unconstrained numbers one dimension needs: ``K`` widths, ``K`` heights and ``K - 1``
    interior derivatives, ``3K - 1``."""
    return 3 * bins - 1


def _check(x, widths, heights, derivatives, bound, min_width, min_height, min_derivative) -> int:
    bins = widths.shape[-1]
    if bins < 1:
        raise ValueError(f"a spline needs at least one bin, got widths with last dimension {bins}")
    if heights.shape[-1] != bins or derivatives.shape[-1] != bins - 1:
        raise ValueError(
            f"with {bins} bins the spline takes {bins} widths, {bins} heights and {bins - 1} interior "
            f"derivatives (last dimensions), got {widths.shape[-1]}, {heights.shape[-1]} and "
            f"{derivatives.shape[-1]}; the boundary derivatives are fixed at 1 by the linear tails"
        )
    if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a positive finite number, got {bound!r}")
    for name, value in (("min_width", min_width), ("min_height", min_height)):
        if not 0 <= value * bins < 1:
            raise ValueError(f"{name}={value!r} with {bins} bins leaves no room for the softmax: "
                             f"it must satisfy 0 <= {name} * bins < 1; lower it or use fewer bins")
    if not min_derivative > 0:
        raise ValueError(f"min_derivative must be positive (the map must stay strictly increasing), "
                         f"got {min_derivative!r}")
    try:
        torch.broadcast_shapes(x.shape, widths.shape[:-1], heights.shape[:-1], derivatives.shape[:-1])
    except RuntimeError:
        raise ValueError(f"the input of shape {tuple(x.shape)} does not broadcast with the spline parameters "
                         f"of shapes {tuple(widths.shape)}, {tuple(heights.shape)}, "
                         f"{tuple(derivatives.shape)} (one set of parameters per element, bins last)") from None
    return bins


def _knots(raw: torch.Tensor, minimum: float, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes ``[..., K]`` summing to ``2B`` and the ``K + 1`` knots from ``-B`` to ``B``."""
    bins = raw.shape[-1]
    frac = minimum + (1 - minimum * bins) * torch.softmax(raw, dim=-1)
    knots = F.pad(torch.cumsum(frac, dim=-1), (1, 0)) * (2 * bound) - bound
    knots = torch.cat([knots.new_full(knots.shape[:-1] + (1,), -bound), knots[..., 1:-1],
                       knots.new_full(knots.shape[:-1] + (1,), bound)], dim=-1)
    return knots[..., 1:] - knots[..., :-1], knots


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(t, -1, idx).squeeze(-1)


def rational_quadratic(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    inverse: bool = False,
    bound: float = 3.0,
    min_width: float = DEFAULT_MIN_WIDTH,
    min_height: float = DEFAULT_MIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rational-quadratic spline (or its inverse) applied elementwise, with linear tails.

    Args:
        x: inputs of any shape ``S`` (in the inverse direction, the outputs ``y`` to invert).
        widths: unconstrained bin widths ``[*S, K]`` (softmax over the last dimension).
        heights: unconstrained bin heights ``[*S, K]``.
        derivatives: unconstrained derivatives at the ``K - 1`` interior knots ``[*S, K - 1]``
            (softplus, shifted so that 0 gives derivative 1); the boundary ones are 1.
        inverse: apply the inverse map (exact: the stable quadratic root).
        bound: the spline acts on ``[-bound, bound]``; outside it is the identity.
        min_width, min_height: the smallest bin, as a fraction of ``2 * bound``.
        min_derivative: the smallest derivative at a knot.
    Returns:
        ``(y, logabsdet)``, both of shape ``S`` (broadcast with the parameters' leading shape), in the
        dtype of ``x``: the output and ``log|dy/dx|`` per element in nats (``log|dx/dy|`` for the
        inverse, which equals minus the forward's at the same point). Sum it over an event to get a
        bijection's ladj.
    """
    _check(x, widths, heights, derivatives, bound, min_width, min_height, min_derivative)
    dtype = x.dtype
    widths, heights, derivatives = (t.to(dtype) for t in (widths, heights, derivatives))
    shape = torch.broadcast_shapes(x.shape, widths.shape[:-1], heights.shape[:-1], derivatives.shape[:-1])
    x = x.expand(shape)
    widths, heights = widths.expand(shape + widths.shape[-1:]), heights.expand(shape + heights.shape[-1:])
    derivatives = derivatives.expand(shape + derivatives.shape[-1:])

    w, x_knots = _knots(widths, min_width, bound)
    h, y_knots = _knots(heights, min_height, bound)
    shift = math.log(math.expm1(1.0 - min_derivative))  # softplus(0 + shift) + min_derivative == 1
    inner = min_derivative + F.softplus(derivatives + shift)
    ones = inner.new_ones(inner.shape[:-1] + (1,))
    d = torch.cat([ones, inner, ones], dim=-1)  # [..., K + 1], 1 at both ends: the linear tails

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)  # the spline branch is evaluated everywhere: keep it finite
    knots = y_knots if inverse else x_knots
    idx = ((xc[..., None] >= knots[..., 1:-1]).sum(-1, keepdim=True))  # bin index in [0, K - 1]
    x_k, y_k, w_k, h_k = _gather(x_knots, idx), _gather(y_knots, idx), _gather(w, idx), _gather(h, idx)
    d_lo, d_hi = _gather(d, idx), _gather(d, idx + 1)
    s = h_k / w_k
    delta = d_lo + d_hi - 2 * s

    if inverse:
        eta = xc - y_k
        a = h_k * (s - d_lo) + eta * delta
        b = h_k * d_lo - eta * delta
        c = -s * eta
        disc = (b.square() - 4 * a * c).clamp(min=0)
        denom_root = -b - disc.sqrt()
        # η = 0 gives c = 0 and ξ = 0; guard the 0/0 the formula would have there
        xi = torch.where(denom_root < 0, 2 * c / torch.where(denom_root < 0, denom_root, -1.0), 0.0)
        xi = xi.clamp(0, 1)
        out = x_k + xi * w_k
    else:
        xi = (xc - x_k) / w_k
        out = None
    one_m = xi * (1 - xi)
    denom = s + delta * one_m
    if out is None:
        out = y_k + h_k * (s * xi.square() + d_lo * one_m) / denom
    log_deriv = 2 * torch.log(s) + torch.log(d_hi * xi.square() + 2 * s * one_m + d_lo * (1 - xi).square()) \
        - 2 * torch.log(denom)
    if inverse:
        log_deriv = -log_deriv
    y = torch.where(inside, out, x)
    return y, torch.where(inside, log_deriv, torch.zeros_like(log_deriv))
