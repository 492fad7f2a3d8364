"""Split (multiscale factor-out with a learned conditional prior) and the top-level priors."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.flows import LearnedPrior, Split, gaussian_log_prob
from glowlab.image.split import LogisticPrior

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


@pytest.mark.parametrize("channels", [2, 5, 8])
def test_split_merge_round_trip(channels):
    """split keeps the first C - C//2 channels and factors out C//2; merge undoes it exactly."""
    split = Split(channels)
    x = torch.randn(3, channels, 2, 2)
    h, z = split.split(x)
    assert h.shape[1] == channels - channels // 2 and z.shape[1] == channels // 2
    assert torch.equal(split.merge(h, z), x)


def test_split_rejects_one_channel_and_wrong_input():
    """Split(1) and splitting input with other channels raise ValueError naming the value."""
    with pytest.raises(ValueError, match="in_channels=1"):
        Split(1)
    with pytest.raises(ValueError, match=r"4 channels.*\(2, 6, 1, 1\)"):
        Split(4).split(torch.zeros(2, 6, 1, 1))


def normal_log_prob(z, mean, std):
    return torch.distributions.Normal(mean, std).log_prob(z).flatten(1).sum(1)


def test_gaussian_log_prob_matches_torch_distributions():
    """gaussian_log_prob sums the diagonal-Gaussian log-density over all but the batch dimension."""
    z, mean, log_std = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2), 0.5 * torch.randn(3, 2, 2, 2)
    torch.testing.assert_close(gaussian_log_prob(z, mean, log_std), normal_log_prob(z, mean, log_std.exp()))


def test_split_prior_starts_standard_normal_and_then_depends_on_h(core_helpers):
    """A fresh split prior is N(0, I); once its conv is non-zero, log p(z | h) is the Gaussian with the
    conv's mean and log-std."""
    split = Split(4)
    h, z = torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3)
    torch.testing.assert_close(split.log_prob(z, h), normal_log_prob(z, torch.zeros(()), torch.ones(())))
    core_helpers.perturb_parameters(split)
    out = split.prior(h)
    mean, log_std = out[:, :2], out[:, 2:]
    assert out.abs().min() > 0
    torch.testing.assert_close(split.log_prob(z, h), normal_log_prob(z, mean, log_std.exp()))


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.3])
def test_split_sample_scales_the_std_by_temperature(temperature, core_helpers):
    """Split.sample draws mean(h) + T * std(h) * eps with eps from the given generator."""
    split = Split(4)
    core_helpers.perturb_parameters(split)
    h = torch.randn(2, 2, 3, 3)
    out = split.prior(h).detach()
    eps = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(5))
    z = split.sample(h, temperature, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z.detach(), out[:, :2] + temperature * out[:, 2:].exp() * eps)


def test_learned_prior_log_prob_and_sample(core_helpers):
    """LearnedPrior: per-channel mean and log-std broadcast over space; sample uses mean + T std eps."""
    prior = LearnedPrior((2, 3, 3))
    core_helpers.perturb_parameters(prior)
    mean, log_std = prior.top[:2].detach(), prior.top[2:].detach()
    z = torch.randn(4, 2, 3, 3)
    expected = normal_log_prob(z, mean[:, None, None], log_std.exp()[:, None, None])
    torch.testing.assert_close(prior.log_prob(z), expected)
    eps = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    sample = prior.sample(4, 0.7, dtype=z.dtype, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sample.detach(), mean[:, None, None] + 0.7 * log_std.exp()[:, None, None] * eps)


def test_fixed_prior_is_standard_normal():
    """learn_top=False: the prior is N(0, I) with no parameters."""
    prior = LearnedPrior((2, 2, 2), learn_top=False)
    assert not list(prior.parameters())
    z = torch.randn(3, 2, 2, 2)
    torch.testing.assert_close(prior.log_prob(z), normal_log_prob(z, torch.zeros(()), torch.ones(())))


@pytest.mark.parametrize("prior_cls", [LearnedPrior, LogisticPrior])
def test_class_conditional_prior_needs_valid_labels(prior_cls, core_helpers):
    """A class-conditional prior raises ValueError without labels, and its density depends on the label."""
    prior = prior_cls((2, 2, 2), num_classes=3)
    core_helpers.perturb_parameters(prior)
    z = torch.randn(2, 2, 2, 2)
    with pytest.raises(ValueError, match="num_classes=3"):
        prior.log_prob(z)
    with pytest.raises(ValueError, match="num_classes=3"):
        prior.sample(2, 1.0)
    with pytest.raises(ValueError, match=r"\[2\]"):
        prior.log_prob(z, torch.tensor([0, 1, 2]))
    lp0, lp1 = prior.log_prob(z, torch.tensor([0, 0])), prior.log_prob(z, torch.tensor([1, 1]))
    assert not torch.allclose(lp0, lp1)


@pytest.mark.parametrize("prior_cls", [LearnedPrior, LogisticPrior])
def test_class_conditional_prior_rejects_out_of_range_labels(prior_cls):
    """Labels outside [0, num_classes) raise ValueError naming the range (not an IndexError deep in
    an embedding)."""
    prior = prior_cls((2, 2, 2), num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        prior.log_prob(torch.zeros(2, 2, 2, 2), torch.tensor([0, 3]))


def test_logistic_prior_is_the_standard_logistic_density():
    """LogisticPrior: log p(z) = sum(-z - 2 log(1 + exp(-z))), the standard logistic, which integrates to 1."""
    prior = LogisticPrior((1, 2, 2))
    z = 4 * torch.randn(5, 1, 2, 2)
    expected = (-z - 2 * torch.log1p(torch.exp(-z))).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    grid = torch.linspace(-40, 40, 20001)
    one_dim = LogisticPrior((1, 1, 1)).log_prob(grid.view(-1, 1, 1, 1)).exp()
    assert math.isclose(torch.trapezoid(one_dim, grid).item(), 1.0, rel_tol=1e-6)


def test_logistic_prior_sample_temperature_scales_the_draws():
    """LogisticPrior samples with the same generator scale linearly with the temperature."""
    prior = LogisticPrior((1, 2, 2))
    s1 = prior.sample(64, 1.0, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s2 = prior.sample(64, 0.5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s2, 0.5 * s1)
    assert torch.isfinite(s1).all()
