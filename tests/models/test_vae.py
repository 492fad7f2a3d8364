"""FlowVAE: the ELBO, the importance-weighted estimate and its standard error, the likelihoods."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.models.vae import FlowVAE, discretized_logistic_log_prob

POSTERIORS = [("diagonal", 0), ("planar", 2), ("radial", 2), ("realnvp", 2), ("iaf", 2)]


def _vae(posterior="planar", length=2, likelihood="bernoulli", **kw) -> FlowVAE:
    return FlowVAE((1, 4, 4), latent_features=3, hidden_features=12, hidden_layers=1, posterior=posterior,
                   length=length, flow_hidden_features=8, likelihood=likelihood, n_bits=5, **kw)


def _images(n=6, seed=0) -> torch.Tensor:
    return torch.randint(0, 32, (n, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("posterior,length", POSTERIORS)
@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_elbo_shape_and_gradients_reach_every_parameter(posterior, length, likelihood, seeded, core_helpers):
    vae = _vae(posterior, length, likelihood)
    core_helpers.perturb_parameters(vae, scale=0.05)
    elbo = vae.elbo(_images())
    assert elbo.shape == (6,) and torch.isfinite(elbo).all()
    (-elbo.mean()).backward()
    core_helpers.assert_every_parameter_has_gradient(vae)


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic"])
def test_iwae_with_one_draw_is_the_elbo_at_the_same_draw(likelihood, default_dtype):
    vae = _vae("realnvp", 2, likelihood)
    x = _images()
    torch.manual_seed(5)
    elbo = vae.elbo(x)
    torch.manual_seed(5)
    est = vae.iwae(x, k=1)
    torch.testing.assert_close(est.log_px, elbo.detach(), rtol=1e-10, atol=1e-10)
    assert torch.isnan(est.stderr).all() and torch.equal(est.ess, torch.ones(6, dtype=est.ess.dtype))


def test_elbo_below_iwae_and_iwae_grows_with_k(seeded, core_helpers):
    vae = _vae("planar", 2)
    core_helpers.perturb_parameters(vae, scale=0.3)  # a posterior far from the true one: loose bound
    x = _images(4)
    elbo = torch.stack([vae.elbo(x).detach() for _ in range(400)]).double()
    iwae = {k: torch.stack([vae.iwae(x, k=k).log_px for _ in range(40)]) for k in (1, 10, 100)}
    se = lambda v: v.std(0) / math.sqrt(v.shape[0])
    # k = 1 is the ELBO in expectation
    assert ((iwae[1].mean(0) - elbo.mean(0)).abs() < 4 * torch.sqrt(se(iwae[1]) ** 2 + se(elbo) ** 2)).all()
    # the estimate tightens as k grows, and never sits below the ELBO
    assert (iwae[10].mean(0) > elbo.mean(0) + 4 * se(elbo)).all()
    assert (iwae[100].mean(0) > iwae[10].mean(0)).all()


def test_iwae_standard_error_matches_the_spread_of_repeats(seeded):
    vae = _vae("radial", 2)
    x = _images(3)
    runs = [vae.iwae(x, k=200, chunk=64) for _ in range(60)]
    spread = torch.stack([r.log_px for r in runs]).std(0)
    reported = torch.stack([r.stderr for r in runs]).mean(0)
    ratio = reported / spread
    assert ((ratio > 0.6) & (ratio < 1.6)).all(), ratio
    ess = torch.stack([r.ess for r in runs])
    assert ((ess >= 1) & (ess <= 200)).all()


def test_discretized_logistic_sums_to_one_and_matches_sigmoid_differences(default_dtype):
    n_bins = 32
    bins = torch.arange(n_bins)[:, None]
    loc = torch.tensor([[-0.9, 0.0, 0.3, 1.0, 0.999]])
    log_scale = torch.tensor([[-1.0, -3.0, 0.5, -6.0, -7.0]])
    lp = discretized_logistic_log_prob(bins, loc, log_scale, n_bins)
    torch.testing.assert_close(lp.exp().sum(0), torch.ones(5), rtol=0, atol=1e-10)
    x = 2 * bins / (n_bins - 1) - 1
    cdf = lambda v: torch.sigmoid((v - loc) * torch.exp(-log_scale))
    direct = cdf(x + 1 / (n_bins - 1)) - cdf(x - 1 / (n_bins - 1))
    direct[0] = cdf(x[0] + 1 / (n_bins - 1))[0]
    direct[-1] = 1 - cdf(x[-1] - 1 / (n_bins - 1))[0]
    ok = direct > 1e-12
    torch.testing.assert_close(lp[ok], direct.log()[ok], rtol=1e-8, atol=1e-8)
    assert torch.isfinite(lp).all()


def test_static_binarisation_and_targets():
    vae = _vae(pixel_max=16)
    x = torch.tensor([0, 8, 9, 16] * 4, dtype=torch.uint8).view(1, 1, 4, 4)
    assert vae.targets(x)[0, :4].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert torch.equal(vae.targets(x), vae.targets(x))
    assert vae.targets(x.float() / 16).dtype.is_floating_point  # floats are taken as prepared
    logistic = _vae(likelihood="logistic")
    assert logistic.targets(x).dtype == torch.long


def test_sample_shape_and_range(seeded):
    for likelihood in ("bernoulli", "logistic"):
        img = _vae(likelihood=likelihood).sample(5)
        assert img.shape == (5, 1, 4, 4) and img.min() >= -0.5 and img.max() <= 0.5


def test_errors():
    with pytest.raises(ValueError, match="posterior"):
        _vae("maf")
    with pytest.raises(ValueError, match="likelihood"):
        _vae(likelihood="gaussian")
    with pytest.raises(ValueError, match=r"\(1, 4, 4\)"):
        _vae().elbo(torch.zeros(2, 1, 5, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="k and chunk"):
        _vae().iwae(_images(), k=0)


@pytest.mark.slow
def test_a_short_fit_on_digits_improves_the_elbo(seeded):
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images[:512]).to(torch.uint8).unsqueeze(1)
    vae = FlowVAE((1, 8, 8), latent_features=8, hidden_features=64, posterior="planar", length=4, n_bits=5,
                  pixel_max=16)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    before = -vae.elbo(x).mean().item()
    for _ in range(150):
        batch = x[torch.randint(0, 512, (64,))]
        loss = -vae.elbo(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = -vae.iwae(x[:64], k=20).log_px.mean().item()
    assert after < before - 10, (before, after)


def test_sample_is_reproducible_with_a_generator_and_displays_with_to_image():
    from glowlab.likelihood import to_image

    vae = _vae()
    a = vae.sample(4, context=None, temperature=0.7, generator=torch.Generator().manual_seed(3))
    b = vae.sample(4, generator=torch.Generator().manual_seed(3), temperature=0.7)
    assert torch.equal(a, b)
    img = to_image(a, 5)  # what sample.py does with a model's samples
    assert img.shape == (4, 1, 4, 4) and 0 <= img.min() and img.max() <= 1
