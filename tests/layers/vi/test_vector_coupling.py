"""VectorAffineCoupling: round trip, exact ladj both ways, context, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from glowlab.core import ContextError
from glowlab.layers.vi import VectorAffineCoupling


@pytest.mark.parametrize("features,parity", [(2, 0), (2, 1), (5, 0), (5, 1)])
@pytest.mark.parametrize("context_features", [None, 3])
def test_round_trip_and_ladj(features, parity, context_features, default_dtype, tol, seeded, core_helpers):
    f = VectorAffineCoupling(features, hidden_features=8, parity=parity, context_features=context_features)
    core_helpers.perturb_parameters(f, scale=0.5)
    x = torch.randn(6, features)
    h = None if context_features is None else torch.randn(6, context_features)
    y, ladj = f(x, h)
    x_back, ladj_inv = f.inverse(y, h)
    torch.testing.assert_close(x_back, x, rtol=0, atol=tol.round_trip_atol)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
    expected, cross = core_helpers.jacobian_logdet(lambda v: f(v, h)[0], x)
    assert cross == 0
    torch.testing.assert_close(ladj, expected, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
    assert ladj.abs().max() > 1e-3  # perturbed: not the identity
    kept = slice(0, features // 2) if parity == 0 else slice(features - features // 2, features)
    torch.testing.assert_close(y[:, kept], x[:, kept], rtol=0, atol=0)


def test_starts_at_identity_and_gradients_reach_every_parameter(seeded, core_helpers):
    f = VectorAffineCoupling(4, hidden_features=8, context_features=2)
    x, h = torch.randn(8, 4), torch.randn(8, 2)
    y, ladj = f(x, h)
    assert torch.equal(y, x) and torch.equal(ladj, torch.zeros(8))
    core_helpers.perturb_parameters(f, scale=0.3)
    y, ladj = f(x, h)
    (y.square().sum() + ladj.sum()).backward()
    core_helpers.assert_every_parameter_has_gradient(f)
    assert f.inverse_kind == "analytic" and f.inverse_is_cheap and f.event_dim == 1


def test_errors():
    with pytest.raises(ValueError, match="features >= 2"):
        VectorAffineCoupling(1)
    with pytest.raises(ValueError, match="parity"):
        VectorAffineCoupling(2, parity=2)
    f = VectorAffineCoupling(3, hidden_features=4, context_features=2)
    with pytest.raises(ContextError, match="context"):
        f(torch.randn(4, 3))
    with pytest.raises(ValueError, match="D=3"):
        f(torch.randn(4, 2), torch.randn(4, 2))
