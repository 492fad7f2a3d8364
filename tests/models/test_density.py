"""The models' densities are normalised: ∫ p(x) dx = 1, estimated by importance sampling in D = 4."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.flows import ActNorm, AffineCoupling, FlowSequence, InvConv1x1, InvConv1x1LU, LearnedPrior, Split, Squeeze
from glowlab.models import NICE, Glow, MultiscaleFlow, RealNVP

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

IMAGE_SHAPE = (1, 2, 2)  # D = 4: small enough for importance sampling to be precise


def two_level_flow_with_split():
    """A 1x2x2 multiscale flow with a split prior (Glow needs 4x4 images for two levels)."""
    level0 = FlowSequence([Squeeze(), ActNorm(4), InvConv1x1LU(4), AffineCoupling(4, 6)])
    level1 = FlowSequence([ActNorm(2), InvConv1x1(2), AffineCoupling(2, 6, scale_fn="tanh")])
    return MultiscaleFlow(IMAGE_SHAPE, [level0, level1], [Split(4), None], LearnedPrior((2, 1, 1)))


DENSITY_MODELS = {
    "glow_affine_lu": lambda: Glow(IMAGE_SHAPE, levels=1, depth=2, hidden_channels=6),
    "glow_additive_invconv": lambda: Glow(IMAGE_SHAPE, levels=1, depth=2, hidden_channels=6, coupling="additive",
                                          permutation="invconv"),
    "realnvp": lambda: RealNVP(IMAGE_SHAPE, levels=1, hidden_channels=4, num_blocks=1, learn_top=True),
    "nice_logistic": lambda: NICE(IMAGE_SHAPE, num_couplings=3, hidden_features=8, hidden_layers=2),
    "multiscale_with_split": two_level_flow_with_split,
}


@pytest.mark.parametrize("name", list(DENSITY_MODELS))
def test_density_integrates_to_one(name, core_helpers):
    """E_q[p(x) / q(x)] = ∫ p = 1 for a perturbed, ActNorm-initialised model, with a heavy-tailed
    Student-t proposal q fitted to the model's samples (50k draws, fixed seed)."""
    torch.manual_seed(0)
    model = DENSITY_MODELS[name]()
    with torch.no_grad():
        model.train()(torch.rand(64, *IMAGE_SHAPE) - 0.5)
    core_helpers.perturb_parameters(model, scale=0.05)
    model.eval()
    with torch.no_grad():
        samples = model.sample(4096, temperature=1.0, generator=torch.Generator().manual_seed(1)).flatten(1)
        assert torch.isfinite(samples).all()
        proposal = torch.distributions.StudentT(torch.tensor(5.0), samples.mean(0), 1.5 * samples.std(0))
        draws = proposal.sample((50_000,))
        log_weights = model.log_prob(draws.view(-1, *IMAGE_SHAPE)) - proposal.log_prob(draws).sum(1)
        zs, logdet = model(draws[:256].view(-1, *IMAGE_SHAPE))
    weights = log_weights.exp()
    estimate = weights.mean().item()
    standard_error = weights.std().item() / math.sqrt(len(weights))
    assert standard_error < 0.01, "the proposal is too poor for a precise estimate"
    assert abs(estimate - 1) < 0.03, f"∫ p = {estimate:.4f} ± {standard_error:.4f}"
    # the model is not the identity map, so the check exercises the flows' logdets
    assert not torch.allclose(torch.cat([z.flatten(1) for z in zs], 1), draws[:256], atol=0.1)
    if name != "nice_logistic" and "additive" not in name:
        assert logdet.abs().min() > 0.5
