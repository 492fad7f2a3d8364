"""AutoregressivePrior: a normalised density over a top latent, sampling consistent with it, and Glow with it."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.image.autoregressive_prior import (
    AutoregressivePrior,
    glow_with_autoregressive_prior,
    glow_with_autoregressive_steps,
)

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


def test_prior_integrates_to_one_and_matches_its_samples(core_helpers):
    prior = AutoregressivePrior((2, 1, 1), layers=3, hidden_features=4)  # a 2-D density
    core_helpers.perturb_parameters(prior, scale=0.3)
    draws = prior.sample(4000).flatten(1)
    mu, sigma = draws.mean(0), 2 * draws.std(0)
    n = 100_000
    z = mu + sigma * torch.randn(n, 2)
    log_q = (-0.5 * ((z - mu) / sigma).square() - sigma.log()).sum(1) - math.log(2 * math.pi)
    with torch.no_grad():
        w = (prior.log_prob(z.view(n, 2, 1, 1)) - log_q).exp()
    se = w.std() / math.sqrt(n)
    assert abs(w.mean() - 1) < 4 * se + 1e-3 and se < 0.02
    # moments of the samples agree with those of exp(log_prob)
    torch.testing.assert_close((z * w[:, None]).mean(0), draws.mean(0), atol=0.1, rtol=0)


def test_prior_temperature_zero_and_gradients(core_helpers):
    prior = AutoregressivePrior((2, 2, 2), layers=2, hidden_features=4, num_classes=3, embedding_features=2)
    core_helpers.perturb_parameters(prior, scale=0.3)
    labels = torch.tensor([0, 2, 1])
    z = prior.sample(3, labels, temperature=1.0)
    (-prior.log_prob(z.detach(), labels).sum()).backward()
    core_helpers.assert_every_parameter_has_gradient(prior)
    cold = prior.sample(3, torch.tensor([1, 1, 1]), temperature=0.0)
    assert torch.equal(cold, cold[:1].expand_as(cold))


def test_glow_with_the_prior_samples_what_it_scores(core_helpers):
    model = glow_with_autoregressive_prior(prior_layers=2, prior_hidden_features=8, image_shape=(1, 4, 4),
                                           levels=2, depth=1, hidden_channels=8)
    model.log_prob(torch.rand(8, 1, 4, 4) - 0.5)  # ActNorm's data-dependent initialisation
    core_helpers.perturb_parameters(model, scale=0.05)
    x, lp = model.rsample_and_log_prob(3)
    torch.testing.assert_close(lp, model.log_prob(x), rtol=1e-8, atol=1e-8)
    other = glow_with_autoregressive_prior(prior_layers=2, prior_hidden_features=8, image_shape=(1, 4, 4),
                                           levels=2, depth=1, hidden_channels=8)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.log_prob(x), model.log_prob(x))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        AutoregressivePrior((4,))
    with pytest.raises(ValueError, match="layers"):
        AutoregressivePrior((1, 2, 2), layers=0)


def test_glow_with_autoregressive_steps_is_exact_both_ways(core_helpers, tol):
    model = glow_with_autoregressive_steps(8, image_shape=(1, 4, 4), levels=2, depth=1, hidden_channels=8)
    x = torch.rand(3, 1, 4, 4) - 0.5
    model.log_prob(x)  # ActNorm's data-dependent initialisation
    core_helpers.perturb_parameters(model, scale=0.05)
    zs, _ = model(x)
    torch.testing.assert_close(model.inverse(zs), x, rtol=0, atol=tol.round_trip_atol)
    xs, lp = model.rsample_and_log_prob(3)
    torch.testing.assert_close(lp, model.log_prob(xs), rtol=1e-8, atol=1e-8)
    assert sum(type(f).__name__ == "MaskedAutoregressive" for level in model.levels for f in level.flows) == 2
