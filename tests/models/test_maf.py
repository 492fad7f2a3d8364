"""MAF and IAF densities: normalised, sampling agrees with log_prob, exact ladj, gradients, state."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.core import ContextError
from glowlab.models.maf import IAF, MAF

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

MODELS = {"maf": MAF, "iaf": IAF}


def small_2d(kind: str, transformer: str, core_helpers):
    model = MODELS[kind](event_shape=(2,), layers=3, hidden_features=8, transformer=transformer, bins=4)
    core_helpers.perturb_parameters(model, scale=0.3)
    return model


def importance_estimate(model, f, n: int = 100_000):
    """``E_q[f(x) p(x) / q(x)]``, its mean and standard error, with a diagonal Gaussian proposal
    ``q`` centred on the model's samples and twice as wide (unbiased for any ``q``; this one keeps
    the weights' variance small whatever the perturbed model looks like)."""
    draws = model.sample(5000)
    mu, sigma = draws.mean(0), 2 * draws.std(0)
    x = mu + sigma * torch.randn(n, 2)
    log_q = (-0.5 * ((x - mu) / sigma).square() - sigma.log()).sum(1) - math.log(2 * math.pi)
    with torch.no_grad():
        w = (model.log_prob(x) - log_q).exp()
    vals = f(x) * w[:, None]
    return vals.mean(0), vals.std(0) / math.sqrt(n)


@pytest.mark.parametrize("transformer", ["affine", "spline"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_density_integrates_to_one(kind, transformer, core_helpers):
    model = small_2d(kind, transformer, core_helpers)
    mass, se = importance_estimate(model, lambda x: torch.ones(len(x), 1))
    assert se.item() < 0.02, f"the estimate is too noisy to check (standard error {se.item():.3f})"
    assert abs(mass.item() - 1) < 4 * se.item() + 1e-3, f"mass {mass.item():.4f} +- {se.item():.4f}"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_samples_follow_log_prob(kind, core_helpers):
    """Moments of the samples match the moments of ``exp(log_prob)`` (by importance sampling), and
    ``rsample_and_log_prob``'s log-density is ``log_prob`` of its draws."""
    model = small_2d(kind, "affine", core_helpers)
    x, lp = model.rsample_and_log_prob(20_000)
    torch.testing.assert_close(lp, model.log_prob(x), rtol=1e-8, atol=1e-8)
    moments = lambda t: torch.cat([t, t.square()], dim=1)
    ref, ref_se = importance_estimate(model, moments)
    emp = moments(x.detach())
    emp_mean, emp_se = emp.mean(0), emp.std(0) / math.sqrt(len(emp))
    assert ((emp_mean - ref).abs() < 5 * (emp_se.square() + ref_se.square()).sqrt()).all(), (emp_mean, ref)


@pytest.mark.parametrize("network", ["conv", "made"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_image_log_prob_is_base_plus_brute_force_logdet(kind, network, core_helpers, tol):
    model = MODELS[kind](image_shape=(2, 2, 2), layers=2, hidden_features=8, network=network)
    core_helpers.perturb_parameters(model, scale=0.3)
    x = torch.randn(3, 2, 2, 2) * 0.5
    logdet, cross = core_helpers.jacobian_logdet(lambda t: model.transform(t)[0], x)
    z = model.transform(x)[0]
    expected = -0.5 * z.flatten(1).square().sum(1) - 4 * math.log(2 * math.pi) + logdet
    torch.testing.assert_close(model.log_prob(x), expected, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
    assert cross == 0
    # and the samples come back to the latents exactly
    x2, lp = model.rsample_and_log_prob(3)
    assert x2.shape == (3, 2, 2, 2)
    torch.testing.assert_close(lp, model.log_prob(x2), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_gradients_reach_every_parameter_conditional(kind, core_helpers):
    model = MODELS[kind](image_shape=(1, 2, 3), layers=2, hidden_features=4, num_classes=3, embedding_features=2)
    core_helpers.perturb_parameters(model, scale=0.3)
    labels = torch.tensor([0, 2, 1])
    (-model.log_prob(torch.randn(3, 1, 2, 3), labels).sum()).backward()
    core_helpers.assert_every_parameter_has_gradient(model)
    model.zero_grad()
    x, lp = model.rsample_and_log_prob(3, labels)
    (x.square().sum() + lp.sum()).backward()
    core_helpers.assert_every_parameter_has_gradient(model)


def test_state_dict_round_trip_keeps_random_orders(core_helpers):
    a = MAF(event_shape=(5,), layers=3, hidden_features=8, order="random", seed=5)
    core_helpers.perturb_parameters(a, scale=0.3)
    b = MAF(event_shape=(5,), layers=3, hidden_features=8, order="random", seed=50)
    b.load_state_dict(a.state_dict())
    core_helpers.assert_same_state(a, b)
    x = torch.randn(4, 5)
    assert torch.equal(a.log_prob(x), b.log_prob(x))
    z = torch.randn(4, 5)
    assert torch.equal(a.transform.inverse(z)[0], b.transform.inverse(z)[0])
    orders = [f.order() for f in a.transform]
    assert not torch.equal(orders[0], orders[1])


def test_training_steps_lower_the_loss(core_helpers):
    data = torch.randn(256, 3) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.1]]) + 2.0
    model = MAF(event_shape=(3,), layers=2, hidden_features=16)
    before = -model.log_prob(data).mean().item()
    core_helpers.adam_steps(model.parameters(), lambda: -model.log_prob(data).mean(), steps=30, lr=3e-2)
    assert -model.log_prob(data).mean().item() < before - 0.5


def test_temperature_zero_gives_the_image_of_the_base_mode():
    model = IAF(event_shape=(3,), layers=2, hidden_features=4)
    x = model.sample(4, temperature=0.0)
    assert torch.equal(x, x[:1].expand(4, 3))


def test_encode_parts_and_passes():
    model = MAF(image_shape=(1, 2, 3), layers=2, hidden_features=4)
    x = torch.randn(2, 1, 2, 3)
    z, ladj, log_base = model.encode(x)
    torch.testing.assert_close(log_base + ladj, model.log_prob(x))
    assert z.shape == x.shape and model.num_dims == 6 and model.sampling_passes == 12


def test_bad_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="exactly one of"):
        MAF()
    with pytest.raises(ValueError, match="exactly one of"):
        MAF(event_shape=(2,), image_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="raster order"):
        MAF(image_shape=(1, 2, 2), order="random")
    with pytest.raises(ValueError, match="network must be one of"):
        MAF(event_shape=(2,), network="rnn")
    with pytest.raises(ValueError, match="needs image_shape"):
        MAF(event_shape=(2,), network="conv")
    model = MAF(event_shape=(2,), layers=1, hidden_features=4)
    with pytest.raises(ValueError, match=r"samples of shape \(2,\)"):
        model.log_prob(torch.randn(3, 3))
    with pytest.raises(ContextError, match="unconditional"):
        model.log_prob(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))
    cond = MAF(event_shape=(2,), layers=1, hidden_features=4, num_classes=2)
    with pytest.raises(ContextError, match=r"labels must lie in \[0, 2\)"):
        cond.log_prob(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ContextError, match="class-conditional"):
        cond.log_prob(torch.randn(3, 2))


def test_tensor_context_is_embedded_and_checked(core_helpers):
    model = MAF(event_shape=(3,), layers=2, hidden_features=20, context_features=4, embedding_features=5)
    core_helpers.perturb_parameters(model, scale=0.3)
    x, ctx = torch.randn(6, 3), torch.randn(6, 4)
    lp = model.log_prob(x, ctx)
    assert not torch.allclose(lp, model.log_prob(x, torch.randn(6, 4)))  # the context matters
    xs, lps = model.rsample_and_log_prob(6, ctx)
    torch.testing.assert_close(lps, model.log_prob(xs, ctx), rtol=1e-8, atol=1e-8)
    with pytest.raises(ContextError, match=r"\[6, 4\]"):
        model.log_prob(x, torch.randn(6, 3))
    with pytest.raises(ValueError, match="not both"):
        MAF(event_shape=(3,), num_classes=2, context_features=4)


@pytest.mark.parametrize("experiment", ["digits_maf", "mnist_idx_maf", "cifar_maf"])
@pytest.mark.parametrize("model", ["maf", "iaf"])
def test_configs_compose_and_name_the_constructor_arguments(experiment, model):
    import inspect

    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class

    from glowlab.training.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"model={model}"])
    kwargs = dict(cfg.model)
    cls = get_class(kwargs.pop("_target_"))
    assert cls is MODELS[model]
    inspect.signature(cls).bind(**kwargs)  # every key is an argument of the constructor
    if experiment == "digits_maf":
        density = cls(**kwargs)
        assert density.num_dims == 64 and density.log_prob(torch.rand(2, 1, 8, 8) - 0.5).shape == (2,)


def test_a_seeded_generator_makes_samples_reproducible():
    model = IAF(event_shape=(3,), layers=2, hidden_features=4)
    a = model.sample(5, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, model.sample(5, generator=torch.Generator().manual_seed(4)))
