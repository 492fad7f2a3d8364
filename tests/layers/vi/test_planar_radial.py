"""Planar and radial flows: exact ladj, the invertibility constraints, injectivity, no inverse."""

from __future__ import annotations

import io

import pytest
import torch

from glowlab.core import ContextError, InverseNotAvailable
from glowlab.layers.vi import Planar, Radial, planar_u_hat

LAYERS = [Planar, Radial]


def _dot_rounding(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A bound on the rounding error of wᵀû recomputed from û = u + c w, where |c|‖w‖² ≤ |wᵀu| + 1 +
    softplus(wᵀu): a few ulps of ‖w‖‖u‖ + |c|‖w‖²."""
    wu = (w * u).sum(-1)
    return 16 * torch.finfo(u.dtype).eps * (2 * w.norm(dim=-1) * u.norm(dim=-1) + torch.nn.functional.softplus(wu) + 2)


def _set_violating_planar(f: Planar) -> None:
    """Free parameters with wᵀu < −1 and ‖w‖ far from 1: the unconstrained map would not be invertible."""
    with torch.no_grad():
        f.w.copy_(torch.linspace(1.0, 2.0, f.features))
        f.u.copy_(-3.0 * f.w / f.w.square().sum())  # wᵀu = -3
        f.b.fill_(0.3)


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("features", [1, 2, 5])
def test_ladj_matches_autograd_jacobian(layer_cls, features, default_dtype, tol, seeded, core_helpers):
    f = layer_cls(features)
    core_helpers.perturb_parameters(f, scale=1.0)
    x = torch.randn(6, features) * 2
    _, ladj = f(x)
    expected, cross = core_helpers.jacobian_logdet(lambda v: f(v)[0], x)
    assert cross == 0
    torch.testing.assert_close(ladj, expected, rtol=tol.logdet_rtol, atol=tol.logdet_atol)


def test_planar_ladj_exact_when_constraint_violated_before_reparameterisation(default_dtype, tol, core_helpers):
    f = Planar(3)
    _set_violating_planar(f)
    assert float((f.w * f.u).sum().detach()) < -1  # the free parameters break the condition ...
    assert float(f.w_dot_u_hat().detach()) >= -1  # ... the reparameterised ones do not
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)) - f.b / f.w.sum()
    _, ladj = f(x)
    expected, _ = core_helpers.jacobian_logdet(lambda v: f(v)[0], x)
    torch.testing.assert_close(ladj, expected, rtol=tol.logdet_rtol, atol=tol.logdet_atol)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_amortised_ladj_matches_autograd_jacobian(layer_cls, default_dtype, tol, seeded, core_helpers):
    f = layer_cls(3, context_features=4)
    core_helpers.perturb_parameters(f, scale=0.5)
    x, h = torch.randn(5, 3), torch.randn(5, 4)
    y, ladj = f(x, h)
    expected, cross = core_helpers.jacobian_logdet(lambda v: f(v, h)[0], x)
    assert cross == 0
    torch.testing.assert_close(ladj, expected, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
    # the context shifts the parameters sample by sample
    assert not torch.allclose(y, f(x, torch.zeros_like(h))[0])


def test_w_dot_u_hat_at_least_minus_one_for_random_parameters(default_dtype):
    gen = torch.Generator().manual_seed(0)
    for scale in (0.01, 1.0, 10.0, 100.0):  # ‖w‖ far below and above 1: dividing by ‖w‖ would fail here
        u = torch.randn(1000, 4, generator=gen) * scale
        w = torch.randn(1000, 4, generator=gen) * torch.rand(1000, 1, generator=gen) * scale
        u_hat, exact_dot = planar_u_hat(u, w, return_dot=True)
        assert (exact_dot >= -1).all()  # softplus(wᵀu) − 1, what the ladj uses
        # recomputed from û, wᵀû is −1 or more up to the rounding of the dot product
        dot = (w * u_hat).sum(-1)
        rounding = _dot_rounding(u, w)
        assert (dot >= -1 - rounding).all(), f"min wᵀû = {dot.min()} at scale {scale}"
        torch.testing.assert_close(dot, exact_dot, rtol=0, atol=float(rounding.max()))
    # w = 0: the correction vanishes instead of dividing by zero
    assert torch.equal(planar_u_hat(torch.ones(3), torch.zeros(3)), torch.ones(3))


def test_planar_layer_constraint_holds_after_random_perturbation(default_dtype, core_helpers):
    for seed in range(20):
        f, g = Planar(3), Planar(3, context_features=2)
        core_helpers.perturb_parameters(f, scale=5.0, seed=seed)
        core_helpers.perturb_parameters(g, scale=5.0, seed=seed)
        h = torch.randn(7, 2) * 5
        for layer, context in ((f, None), (g, h)):
            dot = layer.w_dot_u_hat(context).detach()
            _, w, _, _ = layer.parameters_for(context, None if context is None else 7)
            u = layer.u if context is None else layer.u + layer.head(context, 7)[:, :3]  # the free u
            rounding = _dot_rounding(u.detach(), w.detach())
            assert (dot >= -1 - rounding).all(), f"wᵀû = {dot.min()} (seed {seed})"


def test_radial_constraint_holds_after_random_perturbation(default_dtype, core_helpers):
    for seed in range(20):
        for f, context in ((Radial(3), None), (Radial(3, context_features=2), torch.randn(7, 2) * 5)):
            core_helpers.perturb_parameters(f, scale=5.0, seed=seed)
            alpha, beta, _ = f.coefficients(context, None if context is None else 7)
            assert (alpha > 0).all() and (beta >= -alpha).all()


def test_planar_injective_along_w(default_dtype):
    """wᵀf(z) is strictly increasing along the direction w, even with wᵀu < −1 in the free parameters."""
    f = Planar(2)
    _set_violating_planar(f)
    t = torch.linspace(-5, 5, 2001)
    z = torch.tensor([0.3, -0.7]) + t[:, None] * f.w.detach()
    with torch.no_grad():
        proj = f(z)[0] @ f.w
    assert (proj.diff() > 0).all()
    # the unconstrained map (û replaced by u) folds the same line: the constraint is what prevents it
    with torch.no_grad():
        a = z @ f.w + f.b
        naive = (z + f.u * torch.tanh(a)[:, None]) @ f.w
    assert (naive.diff() < 0).any()


def test_radial_injective_along_a_ray(default_dtype, core_helpers):
    f = Radial(2)
    with torch.no_grad():
        f.beta_raw.fill_(-20.0)  # β close to −α: the strongest contraction allowed
    _, beta, z0 = f.coefficients()
    alpha = f.coefficients()[0]
    assert beta < 0 and beta >= -alpha
    direction = torch.tensor([0.6, 0.8])
    r = torch.linspace(0, 6, 3001)
    with torch.no_grad():
        y = f(z0 + r[:, None] * direction)[0]
        r_out = torch.linalg.vector_norm(y - z0, dim=-1)
    assert (r_out.diff() > 0).all()


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_inverse_raises(layer_cls):
    f = layer_cls(2)
    assert f.inverse_kind == "none" and not f.inverse_is_cheap and f.event_dim == 1
    with pytest.raises(InverseNotAvailable, match="no inverse"):
        f.inverse(torch.randn(3, 2))


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_gradients_reach_every_parameter(layer_cls, default_dtype, seeded, core_helpers):
    f = layer_cls(3, context_features=2)
    core_helpers.perturb_parameters(f, scale=0.5)
    y, ladj = f(torch.randn(8, 3), torch.randn(8, 2))
    (y.square().sum() + ladj.sum()).backward()
    core_helpers.assert_every_parameter_has_gradient(f)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_state_dict_round_trip(layer_cls, seeded, core_helpers):
    f, g = layer_cls(3, context_features=2), layer_cls(3, context_features=2)
    core_helpers.perturb_parameters(f)
    buf = io.BytesIO()
    torch.save(f.state_dict(), buf)
    buf.seek(0)
    g.load_state_dict(torch.load(buf))
    x, h = torch.randn(4, 3), torch.randn(4, 2)
    for a, b in zip(f(x, h), g(x, h)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_bad_inputs_raise_clear_errors(layer_cls):
    with pytest.raises(ValueError, match="features"):
        layer_cls(0)
    f = layer_cls(3)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        f(torch.randn(3))
    with pytest.raises(ValueError, match="D=3"):
        f(torch.randn(4, 2))
    g = layer_cls(3, context_features=2)
    with pytest.raises(ContextError, match="context"):
        g(torch.randn(4, 3))
    with pytest.raises(ContextError, match="rows"):
        g(torch.randn(4, 3), torch.randn(5, 2))
