"""Latent directions and edits (issue 15): exact means, alpha = 0 reconstructs, edits move the
attribute, level restriction, for every multiscale model, in float64."""

from __future__ import annotations

import pytest
import torch

from glowlab.analysis.latents import decode_levels, encode_levels
from glowlab.analysis.manipulation import LatentMean, check_levels, direction_norms, latent_direction, manipulate
from glowlab.models import NICE, Glow, RealNVP
from tests.conftest import perturb_parameters

MODELS = {
    "glow": lambda: Glow(image_shape=(1, 8, 8), levels=2, depth=2, hidden_channels=8),
    "realnvp": lambda: RealNVP(image_shape=(1, 8, 8), levels=2, hidden_channels=8, num_blocks=1),
    "nice": lambda: NICE(image_shape=(1, 4, 4), num_couplings=2, hidden_features=16, hidden_layers=1),
}


def toy_set(shape, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-labelled toy images in model space: class 1 is brighter (a blob of +0.25 in the middle)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    c, h, w = shape
    grid = [torch.linspace(-1, 1, n, dtype=torch.float64) for n in (h, w)]
    yy, xx = torch.meshgrid(*grid, indexing="ij")
    blob = torch.exp(-(xx**2 + yy**2) / 0.5)
    x = 0.1 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64) - 0.2 + 0.3 * y.view(-1, 1, 1, 1) * blob
    return x.clamp(-0.5, 0.49), y


def ready(name: str) -> torch.nn.Module:
    """A float64 model, ActNorm initialised on the toy data, every parameter perturbed off its init."""
    torch.manual_seed(0)
    model = MODELS[name]().double()
    x, _ = toy_set(model.image_shape)
    with torch.no_grad():
        model(x)  # data-dependent initialisation
    perturb_parameters(model, 0.02)
    return model.eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_direction_is_the_difference_of_mean_latents(name):
    model = ready(name)
    x, y = toy_set(model.image_shape, seed=1)
    d = latent_direction(model, x[y == 1], x[y == 0], batch_size=5)  # batches of 5: the mean is over all
    with torch.no_grad():
        zs, _ = model(x)
    expected = [z[y == 1].mean(0) - z[y == 0].mean(0) for z in zs]
    assert len(d) == len(zs) == (1 if name == "nice" else 2)
    for a, b in zip(d, expected):
        assert a.dtype == torch.float64 and torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert direction_norms(d) == pytest.approx([float(b.norm()) for b in expected], rel=1e-12)


@pytest.mark.parametrize("name", list(MODELS))
def test_alpha_zero_reconstructs_and_latents_move_by_alpha_d(name):
    """Re-encoding an edit gives z + alpha * d on the edited levels (so the projection on d grows by
    alpha |d|^2) and the original latents on the others; alpha = 0 gives the input back."""
    model = ready(name)
    x, y = toy_set(model.image_shape, seed=2)
    d = latent_direction(model, x[y == 1], x[y == 0])
    alphas = [-1.0, 0.0, 0.5, 1.0]
    num_levels = len(d)
    for levels in [None] + ([[0], [-1]] if num_levels > 1 else []):
        edits = manipulate(model, x[:6], d, alphas, levels=levels)
        assert edits.shape == (6, 4, *model.image_shape) and edits.dtype == torch.float64
        assert (edits[:, 1] - x[:6]).abs().max() < 1e-10
        zs = encode_levels(model, x[:6])
        edited = check_levels(levels, num_levels)
        for j, alpha in enumerate(alphas):
            again = encode_levels(model, edits[:, j])
            for i, (z0, z1) in enumerate(zip(zs, again)):
                shift = alpha * d[i] if i in edited else torch.zeros_like(d[i])
                assert torch.allclose(z1 - z0, shift.expand_as(z0), atol=1e-8), (levels, alpha, i)
            proj = sum(((z1 - z0) * di).flatten(1).sum(1) for z0, z1, di in zip(zs, again, d))
            expected = alpha * sum(float(d[i].square().sum()) for i in edited)
            assert torch.allclose(proj, torch.full_like(proj, expected), atol=1e-8)


@pytest.mark.parametrize("name", list(MODELS))
def test_edit_moves_the_attribute_monotonically(name):
    """Brighter class as the attribute: editing dark images along the direction raises their mean
    brightness, and a linear classifier's score (mean difference of the classes in pixel space),
    strictly monotonically in alpha; alpha = 1 lands near the bright class's mean brightness."""
    model = ready(name)
    x, y = toy_set(model.image_shape, n=128, seed=3)
    d = latent_direction(model, x[y == 1], x[y == 0])
    dark = x[y == 0][:16]
    alphas = torch.linspace(-1, 1, 9).tolist()
    edits = manipulate(model, dark, d, alphas)
    brightness = edits.mean((0, 2, 3, 4))
    w = x[y == 1].mean(0) - x[y == 0].mean(0)
    score = (edits * w).flatten(2).sum(2).mean(0)
    assert (brightness.diff() > 0).all() and (score.diff() > 0).all(), (brightness, score)
    gap = x[y == 1].mean() - x[y == 0].mean()
    assert abs(brightness[-1] - brightness[4] - gap) < 0.5 * gap


def test_latent_mean_and_errors():
    acc = LatentMean()
    acc.add([torch.ones(2, 3)])
    acc.add([torch.zeros(0, 3)])
    acc.add([3 * torch.ones(2, 3)])
    assert acc.count == 4 and torch.equal(acc.mean()[0], torch.full((3,), 2.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="no images"):
        LatentMean().mean()
    model = ready("glow")
    x, _ = toy_set(model.image_shape, n=4)
    with pytest.raises(ValueError, match="images_without is empty"):
        latent_direction(model, x, x[:0])
    d = latent_direction(model, x[:2], x[2:])
    with pytest.raises(ValueError, match=r"levels= must list level indices from 0 \(finest\) to 1"):
        manipulate(model, x, d, [0.0], levels=[2])
    with pytest.raises(ValueError, match="the direction has 1 levels but the model encodes 2"):
        manipulate(model, x, d[:1], [0.0])
    assert check_levels([-1, 0, 0], 3) == [0, 2] and check_levels(None, 2) == [0, 1]


def test_single_latent_densities_and_conditional_glow():
    """An unconditional FlowDensity (MAF) is one level; a class-conditional Glow encodes and decodes
    with each image's label as context."""
    from glowlab.models import MAF

    maf = MAF(image_shape=(1, 4, 4), layers=2, hidden_features=8).double().eval()
    perturb_parameters(maf, 0.02)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64) - 0.5
    zs = encode_levels(maf, x)
    assert len(zs) == 1 and (decode_levels(maf, zs) - x).abs().max() < 1e-10
    glow = Glow(image_shape=(1, 8, 8), levels=2, depth=1, hidden_channels=8, num_classes=3).double().eval()
    perturb_parameters(glow, 0.02)
    x, labels = torch.rand(4, 1, 8, 8, dtype=torch.float64) - 0.5, torch.tensor([0, 1, 2, 1])
    d = latent_direction(glow, x[:2], x[2:], labels[:2], labels[2:])
    edits = manipulate(glow, x, d, [0.0, 1.0], context=labels)
    assert (edits[:, 0] - x).abs().max() < 1e-10
    with pytest.raises(TypeError, match="no per-level latents"):
        encode_levels(torch.nn.Linear(2, 2), x)
