"""Flow++'s logistic-mixture CDF transform (glowlab.layers.elementwise.logistic_mixture)."""

from __future__ import annotations

import pytest
import torch

from glowlab.core import InversionError
from glowlab.layers.elementwise.logistic_mixture import logistic_mixture


def _params(shape, k=5, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(s, generator=g, dtype=torch.float64)
    return r(*shape, k) * scale, r(*shape, k) * 2 * scale, r(*shape, k) * scale, r(*shape) * 0.5, r(*shape)


@pytest.mark.parametrize("k, scale", [(1, 1.0), (4, 1.0), (8, 2.0)])
def test_inverse_within_tolerance(k, scale):
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    logits, means, log_scales, a, b = _params(x.shape, k, scale)
    y, logd = logistic_mixture(x, logits, means, log_scales, a, b)
    for tol in (1e-6, 1e-10):
        x2, logd_inv = logistic_mixture(y, logits, means, log_scales, a, b, inverse=True, tol=tol)
        # the forward is float64 too, so y's own rounding moves the exact inverse by ~1e-16 / (dy/dx)
        assert ((x2 - x).abs() <= tol + 1e-14 * (1 + (-logd).exp())).all()
    assert torch.allclose(logd, -logd_inv, atol=1e-8)


def test_log_derivative_matches_autograd():
    x = torch.linspace(-6, 6, 201, dtype=torch.float64, requires_grad=True)
    params = _params(x.shape, 6)
    y, logd = logistic_mixture(x, *params)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad.log(), logd, atol=1e-10)


def test_inverse_gradients_are_those_of_the_exact_inverse():
    """The implicit-function step: d x / d y = 1 / (dy/dx), and parameter gradients make
    ``forward(inverse(y)) == y`` hold to first order."""
    x = torch.linspace(-3, 3, 31, dtype=torch.float64)
    params = [p.requires_grad_() for p in _params(x.shape, 3)]
    y, logd = logistic_mixture(x, *params)
    yr = y.detach().requires_grad_()
    x2, _ = logistic_mixture(yr, *params, inverse=True)
    (grad_y,) = torch.autograd.grad(x2.sum(), yr, retain_graph=True)
    assert torch.allclose(grad_y, (-logd).exp(), rtol=1e-8)
    y_again, _ = logistic_mixture(x2, *params)  # y_again == yr whatever the parameters
    grads = torch.autograd.grad(y_again.sum(), params)
    assert max(g.abs().max() for g in grads) < 1e-8


def test_monotone_and_finite_far_in_the_tails():
    x = torch.linspace(-200, 200, 4001, dtype=torch.float64)
    params = _params((), 4)
    y, logd = logistic_mixture(x, *params)
    assert torch.isfinite(y).all() and torch.isfinite(logd).all()
    assert (y.diff() > 0).all()


def test_float32_forward_stays_float32():
    params = [p.float() for p in _params((3,), 4)]
    y, logd = logistic_mixture(torch.randn(2, 3), *params)
    assert y.dtype == logd.dtype == torch.float32 and y.shape == (2, 3)


def test_non_convergence_raises_inversion_error():
    x = torch.linspace(-3, 3, 11, dtype=torch.float64)
    params = _params(x.shape, 4)
    y, _ = logistic_mixture(x, *params)
    with pytest.raises(InversionError, match="max_iter=1"):
        logistic_mixture(y, *params, inverse=True, max_iter=1)
    bad = list(params)
    bad[1] = bad[1].clone()
    bad[1][0, 0] = float("nan")
    with pytest.raises(InversionError, match="non-finite"):
        logistic_mixture(y, *bad, inverse=True)


def test_non_finite_inputs_pass_through_the_inverse_and_the_rest_is_exact():
    """A sample that overflowed upstream (NaN or ±inf) must not fail its whole batch: it stays
    non-finite, with the limits of the increasing map for ±inf, and every other element inverts."""
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    params = _params(x.shape, 4)
    y, _ = logistic_mixture(x, *params)
    y[1], y[3], y[5] = float("nan"), float("inf"), -float("inf")
    x2, logd_inv = logistic_mixture(y, *params, inverse=True)
    assert torch.isnan(x2[1]) and x2[3] == float("inf") and x2[5] == -float("inf")
    keep = torch.tensor([0, 2, 4, 6])
    assert torch.allclose(x2[keep], x[keep], atol=1e-9) and torch.isfinite(logd_inv[keep]).all()


@pytest.mark.parametrize("kwargs, match", [({"tol": 0.0}, "tol"), ({"max_iter": 0}, "max_iter")])
def test_bad_settings_are_named(kwargs, match):
    params = _params((2,), 3)
    with pytest.raises(ValueError, match=match):
        logistic_mixture(torch.zeros(2, dtype=torch.float64), *params, inverse=True, **kwargs)


def test_bad_shapes_are_named():
    logits, means, log_scales, _a, _b = _params((2,), 3)
    with pytest.raises(ValueError, match="last dimension"):
        logistic_mixture(torch.zeros(2), logits, means[..., :2], log_scales)
    with pytest.raises(ValueError, match="broadcast"):
        logistic_mixture(torch.zeros(5), logits, means, log_scales)
