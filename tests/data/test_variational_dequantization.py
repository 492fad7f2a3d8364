"""Variational dequantisation (glowlab.data.dequantization) and its bounds (glowlab.likelihood)."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch

from glowlab.data.dequantization import (
    UniformDequantizer,
    VariationalDequantizer,
    build_dequantizer,
    dequantized_bits_per_dim,
)
from glowlab.likelihood import (
    bits_per_dim,
    dequantize,
    hashed_uniform,
    importance_weighted_bits_per_dim,
    variational_bits_per_dim,
)

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


def _trained_looking(core_helpers, scale=0.1, **kwargs) -> VariationalDequantizer:
    """A dequantiser moved off its (uniform) initialisation."""
    kwargs = {"in_channels": 1, "n_bits": 2, "hidden_channels": 8, "depth": 2, **kwargs}
    q = VariationalDequantizer(**kwargs)
    core_helpers.perturb_parameters(q, scale=scale)
    return q


# --- q = uniform gives today's numbers --------------------------------------------------------------

def test_uniform_dequantizer_equals_todays_bpd_exactly():
    x_int = torch.randint(0, 32, (5, 3, 4, 4))
    noise = hashed_uniform(x_int, seed=7)
    x_tilde, log_q = UniformDequantizer(n_bits=5).dequantize(x_int, noise, dtype=torch.float32)
    assert torch.equal(x_tilde, dequantize(x_int, 5, seed=7)) and torch.equal(log_q, torch.zeros(5))
    log_p = -(x_tilde.double().square().flatten(1).sum(1))  # any density
    assert torch.equal(variational_bits_per_dim(log_p, log_q.double(), 48, 5), bits_per_dim(log_p, 48, 5))
    edges = torch.tensor([0.0, 2.0**-24, 0.5, 1 - 2.0**-24]).view(1, 1, 2, 2)  # hashed noise's extremes
    x_edge = torch.randint(0, 32, (1, 1, 2, 2))
    x_tilde, _ = UniformDequantizer(n_bits=5).dequantize(x_edge, edges, dtype=torch.float32)
    assert x_tilde[0, 0, 0, 0] == x_edge[0, 0, 0, 0] / 32 - 0.5  # noise 0 is used as it is, not clamped
    assert torch.equal(((x_tilde.double() + 0.5) * 32).floor().long(), x_edge)


def test_fresh_variational_dequantizer_is_uniform():
    """Logistic noise through sigmoid is uniform: with zero-initialised heads u = noise, log q = 0."""
    x_int = torch.randint(0, 4, (3, 2, 4, 4))
    noise = torch.rand(x_int.shape)
    u, log_q = VariationalDequantizer(2, n_bits=2, hidden_channels=8, depth=0)(x_int, noise)
    assert torch.equal(log_q, torch.zeros(3)) and torch.allclose(u, noise, atol=1e-15)
    u, log_q = VariationalDequantizer(2, n_bits=2, hidden_channels=8, depth=3)(x_int, noise)
    assert log_q.abs().max() < 1e-12 and torch.allclose(u, noise, atol=1e-12)


# --- q is a density on (0, 1)^D -----------------------------------------------------------------------

def test_log_prob_agrees_with_the_sampled_log_q(core_helpers):
    q = _trained_looking(core_helpers, in_channels=2, n_bits=3)
    x_int = torch.randint(0, 8, (4, 2, 4, 4))
    u, log_q = q(x_int)
    assert ((u > 0) & (u < 1)).all() and not torch.allclose(log_q, torch.zeros(4), atol=1e-2)
    torch.testing.assert_close(q.log_prob(u, x_int), log_q, rtol=1e-9, atol=1e-9)


def test_one_dimensional_q_integrates_to_one(core_helpers):
    """D = 1 (a 1x1 image, one channel): ∫_0^1 q(u | x) du = 1 for every x, computed on a grid in
    v = logit(u) (du = sigmoid'(v) dv) with the trapezoidal rule."""
    q = _trained_looking(core_helpers, scale=0.3)
    v = torch.linspace(-40.0, 40.0, 40001)
    for level in range(4):
        x_int = torch.full((v.numel(), 1, 1, 1), level)
        with torch.no_grad():
            log_q = q.log_prob(v.view(-1, 1, 1, 1), x_int, logit=True)
        integrand = (log_q + torch.nn.functional.logsigmoid(v) + torch.nn.functional.logsigmoid(-v)).exp()
        mass = torch.trapezoid(integrand, v)
        assert abs(float(mass) - 1.0) < 1e-5, f"x={level}: ∫ q = {float(mass)}"
    assert log_q.std() > 0.1  # q is not the uniform density


# --- the bound on a model whose discrete probabilities are exact -------------------------------------

class _GaussianMixture:
    """A density on R^4 (2x2 images) whose mass in any box is exact: Σ_k π_k Π_d N(μ_kd, σ_kd)."""

    def __init__(self, k=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.log_w = torch.log_softmax(torch.randn(k, generator=g), 0)
        self.mu = torch.rand(k, 4, generator=g) - 0.5
        self.sigma = 0.2 + 0.3 * torch.rand(k, 4, generator=g)

    def log_prob(self, x):  # [B, 1, 2, 2] -> [B]
        z = (x.flatten(1)[:, None, :] - self.mu) / self.sigma
        log_n = -0.5 * z.square() - self.sigma.log() - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(self.log_w + log_n.sum(-1), dim=1)

    def log_mass(self, lo, hi):  # boxes [B, 4] -> log P [B]
        phi = lambda t: torch.special.ndtr((t[:, None, :] - self.mu) / self.sigma)
        return torch.logsumexp(self.log_w + (phi(hi) - phi(lo)).log().sum(-1), dim=1)


def _bins(x_int, n_bits=2):
    lo = x_int.flatten(1).double() / 2**n_bits - 0.5
    return lo, lo + 2.0**-n_bits


def _all_images(n_bits=2):
    levels = range(2**n_bits)
    return torch.tensor(list(itertools.product(levels, repeat=4))).view(-1, 1, 2, 2)


@pytest.mark.parametrize("perturbed", [False, True])
def test_bound_holds_image_by_image_on_an_exact_discrete_model(perturbed, core_helpers):
    """2x2 images at 2 bits: the 256 exact probabilities sum to at most 1, and the variational bound
    E_q[log p(x~) - n D log 2 - log q(u | x)] (200 draws each) stays below log P(x) for every image."""
    model, n_bits, draws = _GaussianMixture(), 2, 200
    x_int = _all_images(n_bits)
    log_p_exact = model.log_mass(*_bins(x_int))
    assert float(log_p_exact.exp().sum()) <= 1.0
    q = _trained_looking(core_helpers) if perturbed else VariationalDequantizer(1, n_bits, 8, depth=2)
    with torch.no_grad():
        x_tilde, log_q = q.dequantize(x_int.repeat(draws, 1, 1, 1))
    log_w = (model.log_prob(x_tilde) - log_q - 4 * n_bits * math.log(2)).view(draws, -1)  # [draws, 256]
    bound, se = log_w.mean(0), log_w.std(0) / math.sqrt(draws)
    assert (bound - 3 * se <= log_p_exact).all()
    if perturbed:  # an imperfect q: the gap (KL of q from the model's posterior) is visible
        assert (log_p_exact - bound).mean() > 5 * se.mean()
    else:  # uniform q: the weights p 2^(-nD) / q estimate P(x) without bias
        w = (log_w - log_p_exact).exp()
        assert ((w.mean(0) - 1).abs() <= 5 * w.std(0) / math.sqrt(draws)).all()


def test_samples_follow_the_density_in_one_dimension(core_helpers):
    """D = 1: the empirical CDF of 20000 draws of u ~ q(u | x) matches the CDF integrated from
    ``log_prob`` (Kolmogorov-Smirnov distance well below 0.02; 0.0096 is the 95% level)."""
    q = _trained_looking(core_helpers, scale=0.3)
    x_int = torch.full((20000, 1, 1, 1), 2)
    with torch.no_grad():
        u, _ = q(x_int)
        v = torch.linspace(-40.0, 40.0, 80001)
        log_q = q.log_prob(v.view(-1, 1, 1, 1), x_int[:1].expand(v.numel(), 1, 1, 1), logit=True)
    density_v = (log_q + torch.nn.functional.logsigmoid(v) + torch.nn.functional.logsigmoid(-v)).exp()
    cdf = torch.cat([torch.zeros(1), torch.cumulative_trapezoid(density_v, v)])
    empirical = torch.searchsorted(torch.logit(u.flatten()).sort().values, v).double() / u.numel()
    assert (cdf - empirical).abs().max() < 0.02


def test_importance_weighting_tightens_the_bound(core_helpers):
    model, x_int = _GaussianMixture(), _all_images()[::17]
    q = _trained_looking(core_helpers, scale=0.05)
    """With the same draws, the k-sample bound is below the mean of the one-sample bounds (Jensen),
    and with k = 256 it is within 0.05 bits/dim of the exact value (it converges to it)."""
    noises = [torch.rand(x_int.shape) for _ in range(256)]  # the same draws for both estimates
    with torch.no_grad():
        one = torch.stack([dequantized_bits_per_dim(model.log_prob, q, x_int, noises=[n]) for n in noises]).mean(0)
        many = dequantized_bits_per_dim(model.log_prob, q, x_int, k=256, noises=noises)
    exact = -model.log_mass(*_bins(x_int)) / (4 * math.log(2))
    assert (many <= one).all()
    assert ((many - exact).abs() < 0.05).all()


def test_importance_weighted_with_one_draw_is_the_variational_bound():
    lp, lq = torch.randn(1, 5) - 30, torch.randn(1, 5)
    torch.testing.assert_close(importance_weighted_bits_per_dim(lp, lq, 12, 3),
                               variational_bits_per_dim(lp[0], lq[0], 12, 3).double())


# --- training, state, errors ----------------------------------------------------------------------------

def test_gradients_reach_every_parameter(core_helpers):
    q = _trained_looking(core_helpers, in_channels=2, n_bits=3, scale=0.1)
    x_int = torch.randint(0, 8, (4, 2, 4, 4))
    bpd = dequantized_bits_per_dim(lambda x: -(x.square() * 20).flatten(1).sum(1), q, x_int)
    bpd.mean().backward()
    core_helpers.assert_every_parameter_has_gradient(q)


def test_state_dict_round_trip(core_helpers):
    q = _trained_looking(core_helpers)
    other = VariationalDequantizer(1, 2, 8, depth=2)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    x_int, noise = torch.randint(0, 4, (3, 1, 4, 4)), torch.rand(3, 1, 4, 4)
    for a, b in zip(q(x_int, noise), other(x_int, noise)):
        assert torch.equal(a, b)


def test_float32_noise_at_the_edges_stays_in_the_bin():
    q = VariationalDequantizer(1, 8, 8, depth=1).float()
    x_int = torch.tensor([0, 255, 3, 100]).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    noise = torch.tensor([0.0, 1 - 2**-24, 1e-30, 0.5], dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    x_tilde, log_q = q.dequantize(x_int, noise.contiguous())
    assert torch.isfinite(log_q).all() and x_tilde.dtype == torch.float32
    assert torch.equal(((x_tilde.double() + 0.5) * 256).floor().long(), x_int)


def test_build_dequantizer_from_config():
    assert isinstance(build_dequantizer(None, 3, 8), UniformDequantizer)
    assert isinstance(build_dequantizer({"kind": "uniform"}, 3, 8), UniformDequantizer)
    q = build_dequantizer({"kind": "variational", "hidden_channels": 4, "depth": 1}, 3, 5)
    assert isinstance(q, VariationalDequantizer) and q.n_bits == 5 and len(q.couplings) == 1
    with pytest.raises(ValueError, match="kind"):
        build_dequantizer({"kind": "gaussian"}, 3, 8)


def test_bad_inputs_are_named():
    q = VariationalDequantizer(1, n_bits=2, hidden_channels=4)
    with pytest.raises(ValueError, match="integer pixels"):
        q(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        q(torch.full((2, 1, 4, 4), 4))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        q(torch.zeros(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="noise"):
        q(torch.zeros(2, 1, 4, 4, dtype=torch.long), torch.rand(2, 1, 4, 5))
    with pytest.raises(ValueError, match="n_bits"):
        VariationalDequantizer(1, n_bits=9)
    with pytest.raises(ValueError, match="k"):
        dequantized_bits_per_dim(lambda x: x.sum((1, 2, 3)), q, torch.zeros(2, 1, 4, 4, dtype=torch.long), k=0)
