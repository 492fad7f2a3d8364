"""Glow, RealNVP and NICE at tiny sizes: the model contract (round trip, logdet, gradients, state
dict, train/eval agreement, latent shapes) and sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from glowlab.flows import ActNorm
from glowlab.models import NICE, Glow, RealNVP

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

BATCH = 3


@dataclass(frozen=True)
class ModelCase:
    build: Callable[[], torch.nn.Module]
    image_shape: tuple[int, int, int]
    num_classes: int = 0


def _glow(coupling="affine", permutation="lu", image_shape=(1, 4, 4), **kw):
    def build():
        return Glow(image_shape=image_shape, levels=2, depth=2, hidden_channels=6,
                    coupling=coupling, permutation=permutation, **kw)
    return ModelCase(build, image_shape, kw.get("num_classes", 0))


MODELS = {
    **{f"glow_{c}_{p}": _glow(c, p) for c in ("affine", "additive") for p in ("lu", "invconv", "reverse", "shuffle")},
    "glow_rgb": _glow(image_shape=(3, 4, 4), permutation="invconv"),
    "glow_rgb_8x8": _glow(image_shape=(3, 8, 8)),
    "glow_plain_nets_fixed_top": _glow(actnorm_in_coupling=False, learn_top=False),
    "glow_class_conditional": _glow(num_classes=3),
    "glow_spline": _glow(coupling="spline", coupling_kwargs={"bins": 4}),
    "glow_mixture_class_conditional": _glow(coupling="mixture", coupling_kwargs={"components": 3}, num_classes=2),
    "realnvp": ModelCase(lambda: RealNVP(image_shape=(1, 4, 4), levels=2, hidden_channels=4, num_blocks=1), (1, 4, 4)),
    "realnvp_rgb_one_level": ModelCase(
        lambda: RealNVP(image_shape=(3, 2, 2), levels=1, hidden_channels=4, num_blocks=1, learn_top=True), (3, 2, 2)),
    "realnvp_spline": ModelCase(lambda: RealNVP(image_shape=(1, 4, 4), levels=2, hidden_channels=4, num_blocks=1,
                                                coupling="spline", coupling_kwargs={"bins": 4}), (1, 4, 4)),
    "realnvp_mixture": ModelCase(lambda: RealNVP(image_shape=(1, 4, 4), levels=2, hidden_channels=4, num_blocks=1,
                                                 coupling="mixture", coupling_kwargs={"components": 3}), (1, 4, 4)),
    "realnvp_class_conditional": ModelCase(
        lambda: RealNVP(image_shape=(1, 4, 4), levels=2, hidden_channels=4, num_blocks=1, num_classes=2), (1, 4, 4), 2),
    "nice": ModelCase(
        lambda: NICE(image_shape=(1, 4, 4), num_couplings=4, hidden_features=8, hidden_layers=2), (1, 4, 4)),
    "nice_gaussian_class_conditional": ModelCase(
        lambda: NICE(image_shape=(2, 2, 2), num_couplings=3, hidden_features=8, hidden_layers=1, prior="gaussian",
                     num_classes=2), (2, 2, 2), 2),
}

model_names = pytest.mark.parametrize("name", list(MODELS))


def labels_for(name: str, n: int):
    """Labels ``[n]`` cycling over the classes of a class-conditional model, else None."""
    num_classes = MODELS[name].num_classes
    return torch.arange(n) % num_classes if num_classes else None


def make(name: str, seed: int = 0, batch: int = BATCH):
    """Build model ``name`` (RNG seeded with ``seed``), a batch in model space and its labels (or None)."""
    case = MODELS[name]
    torch.manual_seed(seed)
    model = case.build()
    x = torch.rand(batch, *case.image_shape) - 0.5
    return model, x, labels_for(name, batch)


def prepared(name: str, core_helpers):
    """Model after ActNorm init (one training-mode forward pass) with every parameter perturbed."""
    model, x, labels = make(name)
    init_batch, init_labels = make(name, seed=2, batch=16)[1:]  # enough data for sensible ActNorm statistics
    with torch.no_grad():
        model.train()(init_batch, init_labels)
    core_helpers.perturb_parameters(model, scale=0.05)
    return model, x, labels


def flat_latent(zs) -> torch.Tensor:
    return torch.cat([z.flatten(1) for z in zs], dim=1)


def train(model, x, labels, core_helpers, steps=3):
    core_helpers.adam_steps(model.parameters(), lambda: -model.log_prob(x, labels).mean(), steps=steps)


@model_names
@pytest.mark.parametrize("stage", ["random_init", "actnorm_init", "perturbed", "trained"])
def test_round_trip(name, stage, core_helpers, tol):
    """inverse(forward(x)) == x at random init, after ActNorm init, perturbed and after Adam steps on
    -log_prob, in training and eval mode."""
    model, x, labels = make(name)
    if stage == "random_init":
        model.eval()
    elif stage == "perturbed":
        model, x, labels = prepared(name, core_helpers)
    elif stage in ("actnorm_init", "trained"):
        with torch.no_grad():
            model.train()(x, labels)
    if stage == "trained":
        train(model, x, labels, core_helpers)
    with torch.no_grad():
        for mode in (model.training, False):
            zs, logdet = model.train(mode)(x, labels)
            assert logdet.shape == (BATCH,)
            torch.testing.assert_close(model.inverse(zs, labels), x, rtol=0, atol=tol.round_trip_atol)


@model_names
def test_logdet_matches_autograd_jacobian(name, core_helpers, tol):
    """The model's logdet equals slogdet of the Jacobian of x -> concatenated latents, per image."""
    model, x, labels = prepared(name, core_helpers)
    model.eval()
    with torch.no_grad():
        _, logdet = model(x, labels)
    expected, cross = core_helpers.jacobian_logdet(lambda v: flat_latent(model(v, labels)[0]), x)
    assert logdet.abs().min() > 1e-3 or name.startswith(("glow_additive", "nice"))
    torch.testing.assert_close(logdet, expected, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
    assert cross == 0


@model_names
def test_latents_partition_the_dimensions(name):
    """forward returns one latent per level, together holding exactly D = C*H*W values per image;
    log_prob is [B], finite, in float32 or wider."""
    model, x, labels = make(name)
    zs, logdet = model(x, labels)
    assert len(zs) == len(model.levels)
    assert flat_latent(zs).shape == (BATCH, model.num_dims) and model.num_dims == x[0].numel()
    log_prob = model.log_prob(x, labels)
    assert log_prob.shape == (BATCH,) and torch.isfinite(log_prob).all()
    assert log_prob.dtype == torch.promote_types(x.dtype, torch.float32)


def test_glow_latent_shapes():
    """Glow(1x4x4, levels=2): level 1 factors out 2 of 4 squeezed channels, the top is 8x1x1."""
    model = Glow(image_shape=(1, 4, 4), levels=2, depth=1, hidden_channels=4)
    zs, _ = model(torch.rand(5, 1, 4, 4) - 0.5)
    assert [tuple(z.shape) for z in zs] == [(5, 2, 2, 2), (5, 8, 1, 1)]


@model_names
def test_gradients_reach_every_parameter(name, core_helpers):
    """After ActNorm init and a perturbation, every parameter gets a finite nonzero gradient of -log_prob
    (plus, for a class-conditional model, the cross-entropy of its classifier on the top latent)."""
    model, x, labels = prepared(name, core_helpers)
    model.train()
    zs, logdet, log_prior = model.encode(x, labels)
    loss = -(logdet + log_prior).mean()
    if model.num_classes:
        loss = loss + torch.nn.functional.cross_entropy(model.class_logits(zs[-1]), labels)
    loss.backward()
    core_helpers.assert_every_parameter_has_gradient(model)


@model_names
def test_state_dict_round_trip_is_bit_identical_and_never_reinitialises(name, core_helpers):
    """A state dict loaded into a freshly built model gives bit-identical log_prob and samples, and a
    training-mode forward on a different batch afterwards leaves every parameter unchanged."""
    model, x, labels = prepared(name, core_helpers)
    fresh, _, _ = make(name, seed=1)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model.log_prob(x, labels), fresh.log_prob(x, labels))
        gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
        assert torch.equal(model.sample(BATCH, context=labels, temperature=0.7, generator=gen()),
                           fresh.sample(BATCH, context=labels, temperature=0.7, generator=gen()))
        fresh.train()(2 * x + 0.3, labels)
    actnorms = [m for m in fresh.modules() if isinstance(m, ActNorm)]
    assert actnorms and all(m.is_initialized() for m in actnorms) or name.startswith("nice")
    core_helpers.assert_same_state(model, fresh)  # nothing changed in the training-mode forward


@model_names
def test_train_and_eval_agree_after_init(name, core_helpers, tol):
    """After initialisation, log_prob and latents agree between training and eval mode."""
    model, _, labels = prepared(name, core_helpers)
    x = torch.rand(BATCH, *MODELS[name].image_shape) - 0.5
    with torch.no_grad():
        zs_train, ld_train = model.train()(x, labels)
        zs_eval, ld_eval = model.eval()(x, labels)
        torch.testing.assert_close(flat_latent(zs_eval), flat_latent(zs_train), rtol=0, atol=tol.round_trip_atol)
        torch.testing.assert_close(ld_eval, ld_train, rtol=tol.logdet_rtol, atol=tol.logdet_atol)


@pytest.mark.parametrize("name", ["glow_affine_lu", "glow_rgb", "realnvp", "nice"])
def test_bf16_autocast_keeps_float32_likelihoods_and_exact_inverse(name, core_helpers):
    """Under bfloat16 autocast (a float32 model), log_prob and logdet are float32 and within
    0.01 nats/dim of the float32 values, and inverse(forward(x)) is still exact to float32 precision."""
    model, x, labels = prepared(name, core_helpers)
    model, x = model.float().eval(), x.float()
    with torch.no_grad():
        reference = model.log_prob(x, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_prob = model.log_prob(x, labels)
            zs, logdet = model(x, labels)
            x_back = model.inverse(zs, labels)
    assert log_prob.dtype == torch.float32 and logdet.dtype == torch.float32
    assert (log_prob - reference).abs().max() < 0.01 * model.num_dims
    torch.testing.assert_close(x_back.float(), x, rtol=0, atol=1e-4)


def test_glow_on_28x28_with_two_levels_works(tol):
    """Glow on 1x28x28 with levels=2 (28 is divisible by 4) builds, encodes and inverts."""
    model = Glow(image_shape=(1, 28, 28), levels=2, depth=1, hidden_channels=4)
    x = torch.rand(2, 1, 28, 28) - 0.5
    zs, logdet = model(x)
    assert [tuple(z.shape) for z in zs] == [(2, 2, 14, 14), (2, 8, 7, 7)]
    assert torch.isfinite(logdet).all()
    with torch.no_grad():
        torch.testing.assert_close(model.inverse(zs), x, rtol=0, atol=tol.round_trip_atol)


# -- sampling ----------------------------------------------------------------------------------

@model_names
def test_sample_shapes_finiteness_and_dtype(name, core_helpers):
    """sample(n, temperature) gives n finite images of the model's shape and dtype."""
    model, _, _ = prepared(name, core_helpers)
    labels = labels_for(name, 5)
    model.eval()
    for temperature in (0.7, 1.0):
        images = model.sample(5, context=labels, temperature=temperature)
        assert images.shape == (5, *MODELS[name].image_shape)
        assert images.dtype == torch.get_default_dtype()
        assert torch.isfinite(images).all()


@model_names
def test_temperature_zero_is_the_deterministic_mean_path(name, core_helpers, tol):
    """At temperature 0 every latent is its prior mean: two calls give the same images, and encoding
    them gives back the top prior's mean."""
    model, _, _ = prepared(name, core_helpers)
    labels = labels_for(name, 4)
    model.eval()
    first = model.sample(4, context=labels, temperature=0.0)
    torch.rand(10), torch.randn(10)  # move the global RNG on
    second = model.sample(4, context=labels, temperature=0.0)
    assert torch.equal(first, second)
    assert not torch.equal(model.sample(4, context=labels, temperature=0.5), first)
    with torch.no_grad():
        top_latent = model(first, labels)[0][-1]
        top_mean = model.top_prior.sample(4, context=labels, temperature=0.0, dtype=first.dtype)
    torch.testing.assert_close(top_latent, top_mean, rtol=0, atol=1e3 * tol.round_trip_atol)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.5])
def test_temperature_scales_the_std_at_every_level(temperature, core_helpers, tol):
    """Sampling draws z = mean + T * std * eps at the top prior and at the split prior: encoding a
    sample recovers exactly the generator's noise (top first, then the split), scaled by T."""
    model, _, _ = prepared("glow_affine_lu", core_helpers)
    model.eval()
    with torch.no_grad():
        images = model.sample(4, temperature=temperature, generator=torch.Generator().manual_seed(3))
        z_split, z_top = model(images)[0]
        top_mean, top_log_std = model.top_prior.mean_and_log_std(4, None, None, images.dtype)
        kept_half = model.levels[1].inverse(z_top)[0]  # what the split prior is conditioned on
        split_mean, split_log_std = model.splits[0]._params(kept_half)
        gen = torch.Generator().manual_seed(3)
        expected_top = temperature * torch.randn(z_top.shape, generator=gen)
        expected_split = temperature * torch.randn(z_split.shape, generator=gen)
    atol = 1e3 * tol.round_trip_atol  # the noise is recovered through an inverse and a forward pass
    torch.testing.assert_close((z_top - top_mean) / top_log_std.exp(), expected_top, rtol=0, atol=atol)
    torch.testing.assert_close((z_split - split_mean) / split_log_std.exp(), expected_split, rtol=0, atol=atol)
    assert top_log_std.abs().min() > 0 and split_log_std.abs().min() > 0  # non-trivial priors


def test_class_conditional_sampling_needs_labels_and_uses_them(core_helpers):
    """A class-conditional model refuses to sample or score without labels, and different labels
    give different samples."""
    model, x, _ = prepared("glow_class_conditional", core_helpers)
    model.eval()
    with pytest.raises(ValueError, match="num_classes=3"):
        model.sample(2, temperature=0.7)
    with pytest.raises(ValueError, match="num_classes=3"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="3 rows but 2 samples"):
        model.sample(2, context=torch.tensor([0, 1, 2]), temperature=0.7)
    zeros = model.sample(2, context=torch.tensor([0, 0]), temperature=0.0)
    twos = model.sample(2, context=torch.tensor([2, 2]), temperature=0.0)
    assert not torch.allclose(zeros, twos)


@model_names
def test_samples_are_invertible(name, core_helpers, tol):
    """Encoding a sample and decoding the latents returns the sample."""
    model, _, _ = prepared(name, core_helpers)
    labels = labels_for(name, 4)
    model.eval()
    with torch.no_grad():
        images = model.sample(4, context=labels, temperature=0.8)
        torch.testing.assert_close(model.inverse(model(images, labels)[0], labels), images,
                                   rtol=0, atol=tol.round_trip_atol)
