"""FFJORD densities: normalisation, sampling against log_prob, the multiscale transform's ladj, hooks."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.layers.continuous import CNF
from glowlab.models.ffjord import FFJORD, LogitTransform, VectorFFJORD

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

TIGHT = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}
FAST = {"method": "rk4", "step_size": 0.25}


def _tiny_image_model(core_helpers, **kwargs) -> FFJORD:
    options = {"image_shape": (1, 4, 4), "levels": 2, "hidden_channels": (4,), "trace": "exact", **kwargs}
    model = FFJORD(**options)
    core_helpers.perturb_parameters(model, 0.3)
    return model


def test_a_2d_density_integrates_to_one_on_a_grid(core_helpers):
    model = VectorFFJORD(event_shape=(2,), hidden_features=(16, 16), activation="tanh", method="rk4", step_size=0.2)
    core_helpers.perturb_parameters(model, 0.5)
    side = torch.linspace(-8, 8, 161)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        density = model.log_prob(grid).exp()
    cell = float(side[1] - side[0]) ** 2
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(grid).sum(1).exp()
    assert (density - standard).abs().max() > 1e-3, "the flow is still the identity: the test would be trivial"
    assert float(density.sum()) * cell == pytest.approx(1.0, abs=5e-3)


def test_samples_and_log_prob_agree_vectors(core_helpers):
    model = VectorFFJORD(event_shape=(3,), blocks=2, hidden_features=(8,), **TIGHT)
    core_helpers.perturb_parameters(model, 0.5)
    x, lp = model.rsample_and_log_prob(5)
    torch.testing.assert_close(model.log_prob(x), lp, rtol=1e-7, atol=1e-8)
    assert model.sample(4, temperature=0.5).shape == (4, 3)


@pytest.mark.slow
def test_multiscale_log_prob_equals_the_brute_force_change_of_variables(core_helpers):
    model = _tiny_image_model(core_helpers, **TIGHT)
    x = torch.rand(1, 1, 4, 4) - 0.5
    z, ladj = model.transform(x)
    assert z.shape == (1, 16)
    logabsdet, _ = core_helpers.jacobian_logdet(lambda v: model.transform(v)[0], x)
    torch.testing.assert_close(ladj, logabsdet, rtol=1e-6, atol=1e-8)
    base = -0.5 * (z.square() + math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(model.log_prob(x), base + logabsdet, rtol=1e-6, atol=1e-8)


def test_multiscale_round_trip_and_sampling(core_helpers):
    model = _tiny_image_model(core_helpers, method="dopri5", rtol=1e-8, atol=1e-8)
    x = torch.rand(3, 1, 4, 4) - 0.5
    z, ladj = model.transform(x)
    x2, ladj_inv = model.transform.inverse(z)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-6)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=1e-6, atol=1e-6)
    samples, lp = model.rsample_and_log_prob(2, temperature=0.7)
    assert samples.shape == (2, 1, 4, 4) and ((samples >= -0.5) & (samples < 0.5)).all()
    torch.testing.assert_close(model.log_prob(samples), lp, rtol=1e-6, atol=1e-6)


def test_multiscale_latent_layout_and_levels():
    model = FFJORD(image_shape=(1, 8, 8), levels=3, blocks=2, hidden_channels=(4,), **FAST)
    assert model.transform.latent_shapes == [(2, 4, 4), (4, 2, 2), (4, 2, 2)]
    assert len([m for m in model.modules() if isinstance(m, CNF)]) == 2 * 2 + 2 * 2 + 2
    assert model.event_shape == (1, 8, 8) and model.num_dims == 64
    with pytest.raises(ValueError, match=r"Use levels <= 2"):
        FFJORD(image_shape=(1, 6, 6), levels=3)
    with pytest.raises(ValueError, match="built for images of shape"):
        model.log_prob(torch.zeros(2, 3, 8, 8))


def test_log_prob_with_stderr_exact_and_hutchinson(core_helpers):
    model = _tiny_image_model(core_helpers, **FAST).eval()
    x = torch.rand(2, 1, 4, 4) - 0.5
    exact, stderr = model.log_prob_with_stderr(x, num_probes=4)
    assert torch.equal(stderr, torch.zeros_like(stderr))
    for cnf in model.modules():
        if isinstance(cnf, CNF):
            cnf.eval_trace = "hutchinson"
    torch.manual_seed(1)
    mean, stderr = model.log_prob_with_stderr(x, num_probes=16)
    assert (stderr > 0).all()
    assert ((mean - exact).abs() < 5 * stderr).all()


def test_training_hooks_nfe_and_rnode(core_helpers):
    model = _tiny_image_model(core_helpers, trace="hutchinson", kinetic_weight=0.01, jacobian_weight=0.01, **FAST)
    x = torch.rand(2, 1, 4, 4) - 0.5
    loss = -model.log_prob(x).mean()
    reg = model.regularization_loss()
    assert reg.dim() == 0 and reg > 0 and reg.requires_grad
    (loss + reg).backward()
    core_helpers.assert_every_parameter_has_gradient(model)
    blocks = 2 + 1  # level 1: before and after the squeeze; level 2: one block
    assert model.nfe["forward"] == blocks * 16 and model.nfe["backward"] == blocks * 16
    model.reset_nfe()
    assert model.nfe["forward"] == 0 and model.nfe["total_forward"] == blocks * 16
    assert float(model.regularization_loss()) == 0.0  # read once


def test_state_dict_round_trip_gives_identical_outputs(core_helpers):
    model = _tiny_image_model(core_helpers, **FAST)
    other = FFJORD(image_shape=(1, 4, 4), levels=2, hidden_channels=(4,), trace="exact", **FAST)
    other.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 4, 4) - 0.5
    with torch.no_grad():
        assert torch.equal(model.log_prob(x), other.log_prob(x))


def test_logit_transform_round_trip_and_ladj(core_helpers):
    pre = LogitTransform(0.05)
    x = torch.rand(3, 2, 2) - 0.5
    y, ladj = pre(x)
    x2, ladj_inv = pre.inverse(y)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=1e-12, atol=1e-12)
    logabsdet, _ = core_helpers.jacobian_logdet(lambda v: pre(v)[0], x)
    torch.testing.assert_close(ladj, logabsdet, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="alpha"):
        LogitTransform(0.5)


def test_vector_model_rejects_image_shapes():
    with pytest.raises(ValueError, match="use FFJORD for images"):
        VectorFFJORD(event_shape=(1, 4, 4))
