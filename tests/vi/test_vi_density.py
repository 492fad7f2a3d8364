"""Variational densities: log q of draws agrees with other ways of computing it, reverse-KL fits,
the ELBO estimator, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.core import ContextError, InverseNotAvailable
from glowlab.vi import (
    DiagonalNormal,
    VariationalFlow,
    annealed_free_energy,
    beta_schedule,
    elbo_estimate,
    plot_target_and_samples,
)
from glowlab.vi import energy as get_energy

ALL_FLOWS = [("diagonal", 0), ("planar", 3), ("radial", 3), ("realnvp", 2), ("iaf", 2)]


def _iaf_available() -> bool:
    try:
        import glowlab.layers.autoregressive  # noqa: F401
    except ImportError:
        return False
    return True


def _flows():
    return [pytest.param(f, k, marks=pytest.mark.skipif(f == "iaf" and not _iaf_available(),
                                                        reason="glowlab.layers.autoregressive not present"))
            for f, k in ALL_FLOWS]


def test_diagonal_normal_matches_torch_distributions(default_dtype, seeded):
    d = DiagonalNormal(3)
    with torch.no_grad():
        d.loc.copy_(torch.tensor([0.5, -1.0, 2.0]))
        d.log_scale.copy_(torch.tensor([0.1, -0.3, 0.7]))
    x = torch.randn(6, 3)
    ref = torch.distributions.Normal(d.loc, d.log_scale.exp()).log_prob(x).sum(1)
    torch.testing.assert_close(d.log_prob(x), ref)
    sample, log_q = d.rsample_and_log_prob(6)
    torch.testing.assert_close(log_q, torch.distributions.Normal(d.loc, d.log_scale.exp()).log_prob(sample).sum(1))


@pytest.mark.parametrize("flow,length", [("realnvp", 3), pytest.param("iaf", 2, marks=pytest.mark.skipif(
    not _iaf_available(), reason="glowlab.layers.autoregressive not present"))])
@pytest.mark.parametrize("context_features", [None, 4])
def test_rsample_log_prob_agrees_with_log_prob_through_the_inverse(flow, length, context_features, default_dtype,
                                                                   seeded, core_helpers):
    q = VariationalFlow(3, flow=flow, length=length, context_features=context_features, hidden_features=8)
    core_helpers.perturb_parameters(q, scale=0.3)
    h = None if context_features is None else torch.randn(7, context_features)
    x, log_q = q.rsample_and_log_prob(7, context=h)
    torch.testing.assert_close(q.log_prob(x, context=h), log_q, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("flow", ["planar", "radial"])
@pytest.mark.parametrize("context_features", [None, 2])
def test_forward_only_flows_log_q_equals_base_minus_jacobian_slogdet(flow, context_features, default_dtype, seeded,
                                                                     core_helpers):
    q = VariationalFlow(2, flow=flow, length=4, context_features=context_features)
    core_helpers.perturb_parameters(q, scale=0.5)
    h = None if context_features is None else torch.randn(5, context_features)
    torch.manual_seed(3)
    x, log_q = q.rsample_and_log_prob(5, context=h)
    torch.manual_seed(3)
    z, log_base = q.base.rsample_and_log_prob(5, context=h)
    logdet, _ = core_helpers.jacobian_logdet(lambda v: q.sampler(v, h)[0], z)
    torch.testing.assert_close(x, q.sampler(z, h)[0])
    torch.testing.assert_close(log_q, log_base - logdet, rtol=1e-8, atol=1e-8)
    with pytest.raises(InverseNotAvailable):
        q.log_prob(x, context=h)


def test_realnvp_density_integrates_to_one(default_dtype, seeded, core_helpers):
    q = VariationalFlow(2, flow="realnvp", length=2, hidden_features=8)
    core_helpers.perturb_parameters(q, scale=0.3)
    g = torch.linspace(-9, 9, 601)
    z1, z2 = torch.meshgrid(g, g, indexing="ij")
    with torch.no_grad():
        log_q = q.log_prob(torch.stack([z1.reshape(-1), z2.reshape(-1)], 1))
    mass = float(torch.logsumexp(log_q, 0).exp() * (g[1] - g[0]) ** 2)
    assert mass == pytest.approx(1.0, abs=2e-3)


class GaussianTarget:
    """``U(z) = ½ (z − m)ᵀ Σ⁻¹ (z − m)``, with ``log Z = ½ log det(2π Σ)`` known exactly."""

    def __init__(self):
        self.mean = torch.tensor([1.0, -0.5])
        self.cov = torch.tensor([[1.0, 0.8], [0.8, 1.5]])
        self.prec = torch.linalg.inv(self.cov)

    def __call__(self, z):
        d = z - self.mean.to(z)
        return 0.5 * ((d @ self.prec.to(z)) * d).sum(1)

    def log_z(self) -> float:
        return 0.5 * float(torch.logdet(2 * math.pi * self.cov))


def test_elbo_estimator_is_unbiased(default_dtype, seeded):
    """q diagonal Gaussian, p correlated Gaussian: KL(q‖p) has a closed form; the estimate must
    match it within 4 standard errors."""
    target = GaussianTarget()
    q = VariationalFlow(2, flow="diagonal", length=0)
    with torch.no_grad():
        q.base.loc.copy_(torch.tensor([0.7, -0.2]))
        q.base.log_scale.copy_(torch.tensor([-0.2, 0.1]))
    stats = elbo_estimate(q, target, n=200_000, batch=50_000)
    cov_q = torch.diag(torch.exp(2 * q.base.log_scale.detach()))
    p = torch.distributions.MultivariateNormal(target.mean, target.cov)
    exact = float(torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(q.base.loc.detach(), cov_q), p))
    assert abs(stats["kl"] - exact) < 4 * stats["elbo_se"], (stats, exact)
    assert stats["log_z"] == pytest.approx(target.log_z())


@pytest.mark.slow
def test_reverse_kl_fit_recovers_a_gaussian(seeded):
    target = GaussianTarget()
    q = VariationalFlow(2, flow="realnvp", length=2, hidden_features=16, hidden_layers=1)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    for step in range(600):
        if step == 400:
            for group in opt.param_groups:
                group["lr"] = 1e-3
        loss = annealed_free_energy(q, target, 256)
        opt.zero_grad()
        loss.backward()
        opt.step()
    stats = elbo_estimate(q, target, n=50_000)
    assert stats["kl"] < 0.01, stats
    x = q.sample(50_000)
    torch.testing.assert_close(x.mean(0), target.mean, rtol=0, atol=0.05)
    torch.testing.assert_close(torch.cov(x.T), target.cov, rtol=0, atol=0.1)


@pytest.mark.parametrize("flow,length", _flows())
@pytest.mark.parametrize("context_features", [None, 3])
def test_gradients_reach_every_parameter(flow, length, context_features, seeded, core_helpers):
    q = VariationalFlow(2, flow=flow, length=length, context_features=context_features, hidden_features=8)
    core_helpers.perturb_parameters(q, scale=0.3)
    h = None if context_features is None else torch.randn(16, context_features)
    x, log_q = q.rsample_and_log_prob(16, context=h)
    (log_q + get_energy("u1")(x)).mean().backward()
    core_helpers.assert_every_parameter_has_gradient(q)


def test_errors():
    with pytest.raises(ValueError, match="unknown flow"):
        VariationalFlow(2, flow="maf")
    with pytest.raises(ValueError, match="length=0"):
        VariationalFlow(2, flow="diagonal", length=3)
    with pytest.raises(ValueError, match="non-negative"):
        VariationalFlow(2, flow="planar", length=-1)
    q = VariationalFlow(2, flow="planar", length=2, context_features=3)
    with pytest.raises(ContextError, match="rows"):
        q.rsample_and_log_prob(4, context=torch.randn(5, 3))
    with pytest.raises(ContextError, match="context"):
        q.rsample_and_log_prob(4)


def test_beta_schedule():
    assert beta_schedule(0) == pytest.approx(0.01)
    assert beta_schedule(4950) == pytest.approx(0.505)
    assert beta_schedule(9900) == 1.0 and beta_schedule(50_000) == 1.0
    assert beta_schedule(0, anneal_steps=0) == 1.0
    with pytest.raises(ValueError):
        beta_schedule(0, start=2.0)


def test_plot_writes_png(tmp_path, seeded):
    path = plot_target_and_samples(get_energy("u3"), torch.randn(500, 2), tmp_path / "sub" / "u3.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plot_target_and_samples(get_energy("u3"), torch.randn(5, 3), tmp_path / "x.png")
