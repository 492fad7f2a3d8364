"""Rational-quadratic spline (glowlab.layers.elementwise.splines): exactness in float64."""

from __future__ import annotations

import pytest
import torch

from glowlab.layers.elementwise.splines import rational_quadratic

BOUND = 3.0


def _params(shape, bins=6, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, bins, generator=g, dtype=torch.float64) * scale
    h = torch.randn(*shape, bins, generator=g, dtype=torch.float64) * scale
    d = torch.randn(*shape, bins - 1, generator=g, dtype=torch.float64) * scale
    return w, h, d


@pytest.mark.parametrize("bins", [1, 2, 8])
def test_round_trip_and_inverse_logdet(bins):
    x = torch.linspace(-4.0, 4.0, 2001, dtype=torch.float64)
    w, h, d = _params(x.shape, bins)
    y, logd = rational_quadratic(x, w, h, d, bound=BOUND)
    x2, logd_inv = rational_quadratic(y, w, h, d, inverse=True, bound=BOUND)
    assert (x2 - x).abs().max() <= 1e-10
    assert (logd + logd_inv).abs().max() <= 1e-10


def test_inverse_at_the_knots_and_edges():
    w, h, d = _params((1,), 5)
    edges = torch.tensor([-BOUND, BOUND, 0.0], dtype=torch.float64)
    y, _ = rational_quadratic(edges, w.expand(3, -1), h.expand(3, -1), d.expand(3, -1), bound=BOUND)
    assert torch.allclose(y[:2], edges[:2], atol=1e-12)  # the knots at ±B map to ±B
    x2, _ = rational_quadratic(y, w.expand(3, -1), h.expand(3, -1), d.expand(3, -1), inverse=True, bound=BOUND)
    assert torch.allclose(x2, edges, atol=1e-12)


def test_log_derivative_matches_autograd():
    x = torch.linspace(-3.5, 3.5, 301, dtype=torch.float64, requires_grad=True)
    w, h, d = _params(x.shape, 7)
    y, logd = rational_quadratic(x, w, h, d, bound=BOUND)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad.log(), logd, atol=1e-10)
    yr = y.detach().requires_grad_()
    x2, logd_inv = rational_quadratic(yr, w, h, d, inverse=True, bound=BOUND)
    (grad_inv,) = torch.autograd.grad(x2.sum(), yr)
    assert torch.allclose(grad_inv.log(), logd_inv, atol=1e-9)


def test_monotone_and_continuous_derivative_at_the_tails():
    x = torch.linspace(-5, 5, 20001, dtype=torch.float64)
    w, h, d = _params((), 8, scale=2.0)
    y, _logd = rational_quadratic(x, w, h, d, bound=BOUND)
    assert (y.diff() > 0).all()
    eps = 1e-7
    at = torch.tensor([-BOUND - eps, -BOUND + eps, BOUND - eps, BOUND + eps], dtype=torch.float64)
    _, logd_edges = rational_quadratic(at, w, h, d, bound=BOUND)
    assert logd_edges.abs().max() < 1e-5  # derivative 1 on both sides of both edges


def test_tails_are_the_identity():
    x = torch.tensor([-10.0, -3.0001, 3.0001, 1e6], dtype=torch.float64)
    w, h, d = _params(x.shape, 4)
    for inverse in (False, True):
        y, logd = rational_quadratic(x, w, h, d, inverse=inverse, bound=BOUND)
        assert torch.equal(y, x) and torch.equal(logd, torch.zeros_like(x))


def test_zero_parameters_give_the_identity():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)
    z = torch.zeros(101, 5, dtype=torch.float64)
    y, logd = rational_quadratic(x, z, z, z[:, :4], bound=BOUND)
    assert torch.allclose(y, x, atol=1e-12) and logd.abs().max() < 1e-12


def test_gradients_reach_the_parameters_and_stay_finite():
    x = torch.linspace(-6, 6, 50, dtype=torch.float64)
    w, h, d = (t.requires_grad_() for t in _params(x.shape, 5))
    y, logd = rational_quadratic(x, w, h, d, bound=BOUND)
    (y.sum() + logd.sum()).backward()
    for t in (w, h, d):
        assert torch.isfinite(t.grad).all() and t.grad.abs().max() > 0


def test_broadcasts_and_keeps_float32():
    x = torch.randn(4, 3)
    w, h, d = (t.float() for t in _params((3,), 4))
    y, logd = rational_quadratic(x, w, h, d)
    assert y.shape == logd.shape == (4, 3) and y.dtype == logd.dtype == torch.float32


@pytest.mark.parametrize("kwargs, match", [
    ({"bound": 0.0}, "bound"),
    ({"min_width": 0.3}, "min_width"),
    ({"min_height": 0.25}, "min_height"),
    ({"min_derivative": 0.0}, "min_derivative"),
])
def test_bad_settings_are_named(kwargs, match):
    w, h, d = _params((2,), 4)
    with pytest.raises(ValueError, match=match):
        rational_quadratic(torch.zeros(2), w, h, d, **kwargs)


def test_bad_shapes_are_named():
    w, h, d = _params((2,), 4)
    with pytest.raises(ValueError, match="interior derivatives"):
        rational_quadratic(torch.zeros(2), w, h, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        rational_quadratic(torch.zeros(5), w, h, d)
