"""Each objective's loss and metrics against a closed form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glowlab.core import Compose, FlowDensity, StandardNormal
from glowlab.likelihood import bits_per_dim, dequantize
from glowlab.models import Glow
from glowlab.objectives import ELBO, MaximumLikelihood, ReverseKL
from glowlab.training.steps_data import StepsDataModule
from glowlab.vi import DiagonalNormal, energy

pytestmark = pytest.mark.usefixtures("seeded", "single_thread")


class GaussianEnergy:
    """``U(z) = ½ Σ ((z − m) / s)²`` with its normaliser ``log Z = Σ log s + (D/2) log 2π``."""

    def __init__(self, mean, std):
        self.mean, self.std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)

    def __call__(self, z):
        return 0.5 * ((z - self.mean) / self.std).square().sum(1)

    def log_z(self):
        return float(self.std.log().sum() + 0.5 * len(self.std) * math.log(2 * math.pi))


def gaussian_kl(mu_q, s_q, mu_p, s_p):
    """KL(N(mu_q, s_q²) ‖ N(mu_p, s_p²)), diagonal, nats."""
    return float((torch.log(s_p / s_q) + (s_q**2 + (mu_q - mu_p) ** 2) / (2 * s_p**2) - 0.5).sum())


def gaussian_q(loc, log_scale):
    q = DiagonalNormal(2).double()
    with torch.no_grad():
        q.loc.copy_(torch.tensor(loc)), q.log_scale.copy_(torch.tensor(log_scale))
    return q


def test_reverse_kl_of_a_gaussian_to_a_gaussian_is_the_analytic_kl():
    """For q = N(μ, σ²) and U the energy of N(m, s²): the evaluation kl_estimate averages to the
    analytic KL, and the training loss at β = 1 to KL − log Z (within 4 standard errors)."""
    q = gaussian_q([0.3, -0.5], [-0.2, 0.4])
    target = GaussianEnergy([1.0, 0.5], [0.7, 1.5])
    exact = gaussian_kl(q.loc.detach(), q.log_scale.detach().exp(), target.mean, target.std)
    objective = ReverseKL(target, samples=40_000, anneal_steps=0, eval_samples=40_000)
    _, metrics = objective.loss(q, None, eval_seed=0)
    kl = metrics["kl_estimate"]
    assert abs(float(kl.mean()) - exact) < 4 * float(kl.std()) / math.sqrt(len(kl)) + 1e-9
    assert exact > 0.3  # not a trivial case
    loss, metrics = objective.loss(q, None, step=0)
    se = float(metrics["free_energy"].std()) / math.sqrt(40_000)
    assert abs(float(loss.detach()) - (exact - target.log_z())) < 4 * se
    torch.testing.assert_close(metrics["elbo_estimate"], -metrics["free_energy"])


def test_reverse_kl_anneals_beta_linearly_and_reaches_zero_kl_at_the_target():
    """β_t = min(1, β0 + t / N); q equal to the target has KL 0 exactly (every draw)."""
    target = GaussianEnergy([0.0, 0.0], [1.0, 1.0])
    objective = ReverseKL(target, samples=8, beta0=0.1, anneal_steps=100)
    q = gaussian_q([0.0, 0.0], [0.0, 0.0])
    betas = [float(objective.loss(q, None, step=t)[1]["beta"]) for t in (0, 50, 90, 200)]
    assert betas == pytest.approx([0.1, 0.6, 1.0, 1.0])
    _, metrics = objective.loss(q, None, eval_seed=0)
    torch.testing.assert_close(metrics["kl_estimate"], torch.zeros_like(metrics["kl_estimate"]), atol=1e-9, rtol=0)


def test_reverse_kl_target_from_a_config_and_bad_targets():
    objective = ReverseKL({"_target_": "glowlab.vi.energy", "name": "u2"}, samples=4)
    assert objective.target.name == "u2" and objective.log_z() == pytest.approx(energy("u2").log_z())
    with pytest.raises(ValueError, match="callable energy"):
        ReverseKL(3.0)
    with pytest.raises(ValueError, match="samples"):
        ReverseKL(energy("u1"), samples=0)


def test_maximum_likelihood_nats_for_continuous_data():
    """On continuous data the loss is -log N(x; 0, I) averaged: ½|x|² + (D/2) log 2π."""
    model = FlowDensity(StandardNormal((3,)), Compose([]))
    x = torch.randn(5, 3)
    loss, metrics = MaximumLikelihood().loss(model, (x,))
    expected = 0.5 * x.square().sum(1) + 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(metrics["nll"], expected)
    torch.testing.assert_close(loss, expected.mean())


def test_maximum_likelihood_bpd_parts_and_the_classifier_loss():
    """bpd = prior_bpd + logdet_bpd + n_bits per image and equals bits_per_dim(log_prob); with
    weight_y the loss adds weight_y times the classifier's cross-entropy in bits, and accuracy is
    the fraction of argmax hits."""
    torch.manual_seed(0)
    model = Glow((1, 4, 4), levels=1, depth=1, hidden_channels=4, num_classes=3)
    x_int, y = torch.randint(0, 32, (6, 1, 4, 4)), torch.tensor([0, 1, 2, 0, 1, 2])
    model.log_prob(dequantize(x_int, 5), y)  # ActNorm init
    with torch.no_grad():
        model.classifier.weight.normal_()
    objective = MaximumLikelihood(weight_y=0.5)
    objective.setup(model, n_bits=5)
    loss, m = objective.loss(model, (x_int, y), eval_seed=7)
    torch.testing.assert_close(m["bpd"], m["prior_bpd"] + m["logdet_bpd"] + 5)
    lp = model.log_prob(dequantize(x_int, 5, seed=7), y)
    torch.testing.assert_close(m["bpd"], bits_per_dim(lp, 16, 5).detach())
    logits = model.class_logits(model(dequantize(x_int, 5, seed=7), y)[0][-1])
    bits_y = F.cross_entropy(logits, y, reduction="none") / math.log(2)
    torch.testing.assert_close(loss, m["bpd"].mean() + 0.5 * bits_y.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m["accuracy"], (logits.argmax(1) == y).float())
    with pytest.raises(ValueError, match="weight_y"):
        MaximumLikelihood(weight_y=1.0).setup(Glow((1, 4, 4), levels=1, depth=1, hidden_channels=4), 5)


def test_elbo_loss_and_bound_in_bits_per_dim():
    class Toy(torch.nn.Module):
        context_kind = None  # unconditional, declared as every model declares it

        def elbo(self, x, context=None):
            return -x.flatten(1).abs().sum(1)

    x = torch.rand(3, 1, 2, 2)
    loss, m = ELBO().loss(Toy(), (x, torch.zeros(3)))
    torch.testing.assert_close(m["neg_elbo"], x.flatten(1).sum(1))
    torch.testing.assert_close(m["bpd_bound"], x.flatten(1).sum(1) / (4 * math.log(2)))
    torch.testing.assert_close(loss, x.flatten(1).sum(1).mean())
    with pytest.raises(ValueError, match="elbo"):
        ELBO().setup(FlowDensity(StandardNormal((2,)), Compose([])))


def test_steps_data_module_lengths():
    dm = StepsDataModule(steps_per_epoch=7, val_steps=2, test_steps=3)
    assert [len(dm.train_dataloader()), len(dm.val_dataloader()), len(dm.test_dataloader())] == [7, 2, 3]
    assert dm.n_bits is None and next(iter(dm.train_dataloader())).shape == (1, 1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        StepsDataModule(steps_per_epoch=0)


def test_variational_dequantization_adds_log_q_to_the_bound():
    """With a learned q(u | x) the bpd is the variational bound: prior + logdet + log q / (D ln 2) + n,
    equal to variational_bits_per_dim of the same draw; evaluation noise is a fixed function of the image."""
    from glowlab.likelihood import hashed_uniform, variational_bits_per_dim

    torch.manual_seed(0)
    model = Glow((1, 4, 4), levels=1, depth=1, hidden_channels=4)
    objective = MaximumLikelihood(dequantization={"kind": "variational", "hidden_channels": 4, "depth": 1})
    objective.setup(model, n_bits=3)
    core = objective.dequantizer
    for p in core.parameters():  # off the zero-initialised (uniform) start
        p.data.add_(0.1 * torch.randn_like(p))
    x_int = torch.randint(0, 8, (5, 1, 4, 4))
    _, m = objective.loss(model, (x_int, None), eval_seed=3)
    torch.testing.assert_close(m["bpd"], m["prior_bpd"] + m["logdet_bpd"] + m["dequant_bpd"] + 3)
    assert m["dequant_bpd"].abs().min() > 0
    x, log_q = core.dequantize(x_int, hashed_uniform(x_int, 3))
    torch.testing.assert_close(m["bpd"], variational_bits_per_dim(model.log_prob(x), log_q, 16, 3).detach())
    torch.testing.assert_close(objective.loss(model, (x_int, None), eval_seed=3)[1]["bpd"], m["bpd"])
    with pytest.raises(ValueError, match="dequantization"):
        MaximumLikelihood(dequantization="variational").setup(FlowDensity(StandardNormal((2,)), Compose([])), None)
