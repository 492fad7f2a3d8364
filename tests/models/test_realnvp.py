"""RealNVP: the bounded translation that keeps a perturbed model invertible (issue 10 item 12), the
coupling choice (affine, spline, mixture; issue 14), and 0.1 configs rebuilt unbounded."""

from __future__ import annotations

import pytest
import torch

from glowlab.layers import AffineCoupling
from glowlab.layers.coupling.mixture import MixtureCoupling
from glowlab.layers.coupling.spline import SplineCoupling
from glowlab.models import RealNVP
from glowlab.models.compat import explicit_model_config, legacy_model_config

pytestmark = pytest.mark.usefixtures("default_dtype", "single_thread")


def _perturbed(core_helpers, sigma=0.05, batch=3, image_shape=(1, 8, 8), **kwargs):
    """A RealNVP after ActNorm's data initialisation, every parameter moved by N(0, sigma^2)."""
    torch.manual_seed(0)
    model = RealNVP(image_shape=image_shape, **kwargs)
    x = torch.rand(batch, *image_shape) - 0.5
    with torch.no_grad():
        model.log_prob(x, torch.arange(batch) % model.num_classes if model.num_classes else None)
    core_helpers.perturb_parameters(model, scale=sigma, seed=1)
    return model.eval(), x


def _flat_latent(model):
    return lambda v: torch.cat([z.flatten(1) for z in model(v)[0]], 1)


def test_default_realnvp_inverts_after_a_0_05_perturbation(core_helpers):
    """The issue's case, RealNVP(image_shape=(1, 8, 8)) perturbed by N(0, 0.05^2). Bounded (the
    default translation_bound=5): latents ~1e3, and the inverse is exact up to the map's own
    conditioning. Its backward error, |f(f^-1(z)) - z| / |z|, is ~1e-14; the forward error
    |f^-1(z) - x| is ~cond(J) * 1e-16, and cond(J) reaches 2e10 at this perturbation (1.8e-6 on
    image 0 here, 1e-12 on most). Unbounded (0.1's model): latents ~1e30, the round trip fails."""
    model, x = _perturbed(core_helpers)
    assert model.config["translation_bound"] == 5.0
    assert all(m.translation_bound == 5.0 for m in model.modules() if isinstance(m, AffineCoupling))
    flat = _flat_latent(model)
    with torch.no_grad():
        z, logdet = flat(x), model(x)[1]
        x_back = model.inverse(model(x)[0])
        z_back = flat(x_back)
    assert torch.isfinite(logdet).all() and z.abs().max() < 1e5
    assert (z_back - z).abs().max() / z.abs().max() < 1e-12
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-5)

    unbounded, x = _perturbed(core_helpers, translation_bound=None)
    with torch.no_grad():
        zs, _ = unbounded(x)
        assert max(z.abs().max() for z in zs) > 1e20 and (unbounded.inverse(zs) - x).abs().max() > 1.0


def test_default_realnvp_ladj_matches_slogdet_after_a_0_05_perturbation(core_helpers):
    """ladj of the 0.05-perturbed RealNVP(image_shape=(1, 8, 8)) against slogdet of its 64 x 64
    autograd Jacobian (unbounded, the two disagree by ~1600 nats)."""
    model, x = _perturbed(core_helpers, batch=1)
    with torch.no_grad():
        _, logdet = model(x)
    expected, _ = core_helpers.jacobian_logdet(_flat_latent(model), x)
    torch.testing.assert_close(logdet, expected, rtol=1e-8, atol=1e-8)


COUPLINGS = {
    "affine": (AffineCoupling, None),
    "spline": (SplineCoupling, {"bins": 4, "bound": 2.0}),
    "mixture": (MixtureCoupling, {"components": 3}),
}


@pytest.mark.parametrize("coupling", list(COUPLINGS))
@pytest.mark.parametrize("num_classes", [0, 2])
def test_coupling_choice_round_trip_and_jacobian(coupling, num_classes, core_helpers, tol):
    """coupling="affine" | "spline" | "mixture", with coupling_kwargs reaching the coupling class:
    round trip, ladj against slogdet of the Jacobian (float64, perturbed), on 1x4x4 images with two
    levels (checkerboard and channel masks)."""
    cls, kwargs = COUPLINGS[coupling]
    model, x = _perturbed(core_helpers, sigma=0.1, batch=2, image_shape=(1, 4, 4), levels=2, hidden_channels=4,
                          num_blocks=1, coupling=coupling, coupling_kwargs=kwargs, num_classes=num_classes)
    layers = [m for m in model.modules() if isinstance(m, (AffineCoupling, SplineCoupling, MixtureCoupling))]
    assert len(layers) == 10 and all(type(m) is cls for m in layers)
    assert {m.mask for m in layers} == {"checkerboard", "channel"}
    if coupling == "affine":  # RealNVP's own: log s = scale * tanh(h), bounded translation
        assert all(m.scale_fn == "tanh" and m.translation_bound == 5.0 for m in layers)
    for key, value in (kwargs or {}).items():
        assert all(getattr(m, key) == value for m in layers)
    y = torch.arange(2) % num_classes if num_classes else None
    fn = _flat_latent(model) if not num_classes else (lambda v: torch.cat([z.flatten(1) for z in model(v, y)[0]], 1))
    with torch.no_grad():
        zs, logdet = model(x, y)
        x_back = model.inverse(zs, y)
        z_back = fn(x_back)
    if coupling == "mixture":  # each inverse to tol=1e-10 in x (Newton/bisection), then amplified by the
        # later layers' inverses: check the backward error, |f(x_back) - z|
        torch.testing.assert_close(z_back, torch.cat([z.flatten(1) for z in zs], 1), rtol=0, atol=1e-8)
        torch.testing.assert_close(x_back, x, rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(x_back, x, rtol=0, atol=tol.round_trip_atol)
    expected, cross = core_helpers.jacobian_logdet(fn, x)
    torch.testing.assert_close(logdet, expected, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
    assert cross == 0
    assert model.config["coupling"] == coupling


def test_bad_coupling_arguments_are_named():
    with pytest.raises(ValueError, match=r"coupling must be one of \['affine', 'mixture', 'spline'\], got 'nsf'"):
        RealNVP((1, 4, 4), levels=2, coupling="nsf")
    for bad in (0.0, -1, True, "5"):
        with pytest.raises(ValueError, match="translation_bound must be a number > 0 or None"):
            RealNVP((1, 4, 4), levels=2, translation_bound=bad)


def test_a_0_1_config_is_rebuilt_unbounded_and_a_new_one_explicitly_bounded():
    """A RealNVP model_config without translation_bound (glowlab 0.1) loads with None; a new one is
    stored with the current default, so it is never read as 0.1's; other models are untouched."""
    old = {"_target_": "glowlab.models.RealNVP", "image_shape": [1, 4, 4], "levels": 2, "num_blocks": 1}
    config, notes = legacy_model_config(old, {})
    assert config["translation_bound"] is None and "translation_bound=None" in notes[0]
    assert "translation_bound" not in old  # not mutated
    model = RealNVP(**{k: v for k, v in config.items() if k != "_target_"})
    assert all(m.translation_bound is None for m in model.modules() if isinstance(m, AffineCoupling))
    new = explicit_model_config(old)
    assert new["translation_bound"] == 5.0 and legacy_model_config(new, {}) == (new, [])
    assert legacy_model_config({**old, "translation_bound": 2.0}, {})[0]["translation_bound"] == 2.0
    glow = {"_target_": "glowlab.models.Glow", "image_shape": [1, 4, 4]}
    assert legacy_model_config(glow, {}) == (glow, []) and explicit_model_config(glow) == glow


def test_resuming_a_0_1_realnvp_compares_the_models_it_builds():
    """The resume check reads a 0.1 RealNVP config as unbounded: resuming it with translation_bound=5
    is refused (naming the key), with null it is accepted; a config without the key is today's 5.0."""
    from glowlab.training.checkpoint_checks import CheckpointError, check_resume_model_config

    old = {"_target_": "glowlab.models.RealNVP", "image_shape": [1, 4, 4], "levels": 2}
    ckpt = {"hyper_parameters": {"model_config": old}, "state_dict": {}}
    with pytest.raises(CheckpointError, match="model.translation_bound: checkpoint None, this run 5.0"):
        check_resume_model_config(ckpt, {**old, "translation_bound": 5.0}, "old.ckpt")
    check_resume_model_config(ckpt, {**old, "translation_bound": None}, "old.ckpt")
    new = {"hyper_parameters": {"model_config": {**old, "translation_bound": 5.0}}, "state_dict": {}}
    check_resume_model_config(new, old, "new.ckpt")
