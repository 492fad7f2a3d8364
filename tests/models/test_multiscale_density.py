"""Glow, RealNVP and NICE under the density contract: rsample_and_log_prob, context, temperature,
the pre-0.2 call forms, conditional couplings, and state dicts written by glowlab 0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import get_class

from glowlab.core import ContextError, Density
from glowlab.models import NICE, Glow, RealNVP
from glowlab.models.compat import legacy_model_config
from tests.models.test_model_contract import MODELS, labels_for, prepared

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

V01 = Path(__file__).parent / "data" / "glowlab_0_1_state_dicts.pt"


@pytest.mark.parametrize("name", list(MODELS))
def test_rsample_and_log_prob_agrees_with_log_prob_of_the_sample(name, core_helpers, tol):
    """The log-density rsample_and_log_prob computes from the priors and the inverse's ladj equals
    log_prob of the sample (a forward pass), at T = 1 and T = 0.6, and the draws carry gradients."""
    model, _, _ = prepared(name, core_helpers)
    model.eval()
    labels = labels_for(name, 5)
    for temperature in (1.0, 0.6):
        x, log_p = model.rsample_and_log_prob(5, context=labels, temperature=temperature)
        assert isinstance(model, Density) and x.shape == (5, *MODELS[name].image_shape) and log_p.shape == (5,)
        torch.testing.assert_close(log_p, model.log_prob(x, context=labels), rtol=1e-6, atol=1e3 * tol.round_trip_atol)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(log_p.sum() + x.sum(), params, allow_unused=True)
    assert sum(int(g is not None and g.abs().sum() > 0) for g in grads) > len(params) // 2


def test_temperature_scales_the_spread_of_the_samples(core_helpers):
    """Lower temperature gives samples nearer the T = 0 (mean-path) image, on average."""
    model, _, _ = prepared("glow_affine_lu", core_helpers)
    model.eval()
    mode = model.sample(1, temperature=0.0)
    spread = [float((model.sample(256, temperature=t) - mode).square().mean()) for t in (0.3, 0.7, 1.0)]
    assert spread[0] < spread[1] < spread[2]


def test_sample_with_context_follows_the_labels(core_helpers):
    """A class-conditional model's samples depend on their labels row by row: the same label gives
    the same mean-path image at T = 0."""
    model, _, _ = prepared("glow_class_conditional", core_helpers)
    model.eval()
    images = model.sample(4, context=torch.tensor([0, 1, 0, 2]), temperature=0.0)
    assert torch.equal(images[0], images[2]) and not torch.allclose(images[0], images[1])
    with pytest.raises(ContextError, match="num_classes=3"):
        model.rsample_and_log_prob(2)


def test_pre_0_2_call_forms_still_work_with_a_deprecation_warning(core_helpers):
    """sample(n, T), sample(n, T, labels) and the cond= keyword give what the new keywords give."""
    model, x, labels = prepared("glow_class_conditional", core_helpers)
    model.eval()

    def gen():
        return torch.Generator().manual_seed(4)

    new = model.sample(3, context=labels, temperature=0.7, generator=gen())
    with pytest.warns(DeprecationWarning, match="deprecated"):
        old = model.sample(3, 0.7, labels, generator=gen())
    assert torch.equal(old, new)
    with pytest.warns(DeprecationWarning, match="cond="):
        assert torch.equal(model.sample(3, 0.7, cond=labels, generator=gen()), new)
    with pytest.warns(DeprecationWarning, match="cond="):
        torch.testing.assert_close(model.log_prob(x, cond=labels), model.log_prob(x, context=labels))
    with pytest.raises(TypeError, match="only context="):
        model.log_prob(x, context=labels, cond=labels)
    plain, _, _ = prepared("glow_affine_lu", core_helpers)
    with pytest.warns(DeprecationWarning):
        assert plain.sample(2, 0.5).shape == (2, 1, 4, 4)


@pytest.mark.parametrize("cls, kwargs", [
    (Glow, {"levels": 2, "depth": 1, "hidden_channels": 4}),
    (RealNVP, {"levels": 2, "hidden_channels": 4, "num_blocks": 1}),
])
def test_conditional_couplings_receive_the_context(cls, kwargs, core_helpers):
    """With condition_couplings (the default for a class-conditional model) the latents, not only
    the prior, change with the label; without it they do not."""
    x = torch.rand(2, 1, 4, 4) - 0.5
    for condition, changes in ((True, True), (False, False)):
        torch.manual_seed(0)
        model = cls(image_shape=(1, 4, 4), num_classes=3, condition_couplings=condition, **kwargs)
        model(x, torch.tensor([0, 0]))  # ActNorm init
        core_helpers.perturb_parameters(model, scale=0.05)
        with torch.no_grad():
            z0, ld0 = model(x, torch.tensor([0, 0]))
            z2, ld2 = model(x, torch.tensor([2, 2]))
        assert (not torch.allclose(z0[-1], z2[-1])) == changes and (not torch.allclose(ld0, ld2)) == changes
        assert model.condition_couplings == condition


def test_tensor_context_reaches_prior_and_couplings(core_helpers):
    """context_features: a float [B, F] context conditions the model; a label is refused."""
    torch.manual_seed(0)
    model = Glow((1, 4, 4), levels=1, depth=1, hidden_channels=4, context_features=5)
    x, c = torch.rand(3, 1, 4, 4) - 0.5, torch.randn(3, 5)
    model(x, c)
    core_helpers.perturb_parameters(model, scale=0.05)
    assert model.context_kind == "tensor"
    assert not torch.allclose(model.log_prob(x, c), model.log_prob(x, 2 * c))
    with pytest.raises(ContextError, match=r"\[3, 5\]"):
        model.log_prob(x, torch.tensor([0, 1, 2]))


def test_nice_takes_a_latent_prior_of_either_kind():
    """NICE builds its logistic or Gaussian prior on the one LatentPrior base."""
    from glowlab.image import LatentPrior

    for prior in ("logistic", "gaussian"):
        model = NICE((1, 2, 2), num_couplings=2, hidden_features=4, hidden_layers=1, prior=prior)
        assert isinstance(model.top_prior, LatentPrior)


def test_compile_levels_does_not_shadow_module_compile():
    assert Glow.compile is torch.nn.Module.compile and callable(Glow.compile_levels)


@pytest.mark.parametrize("name", ["glow", "glow_class_conditional", "realnvp", "nice_class_conditional"])
def test_state_dicts_of_glowlab_0_1_load_with_identical_outputs(name):
    """State dicts written by glowlab 0.1 (tests/models/make_v01_state_dicts.py) load strictly into
    today's classes and give the same log_prob and, from the same generator, the same samples, once
    built with the arguments glowlab.models.compat gives their configs: a class-conditional 0.1 model
    with condition_couplings=False, a 0.1 RealNVP with translation_bound=None."""
    case = torch.load(V01, weights_only=False)[name]
    kwargs = dict(case["kwargs"])
    if kwargs.get("num_classes") and get_class(case["target"]) is not NICE:
        with pytest.raises(ValueError, match="glowlab 0.1.*condition_couplings=False"):
            get_class(case["target"])(**kwargs).load_state_dict(case["state_dict"])
    config, notes = legacy_model_config({"_target_": case["target"], **kwargs}, case["state_dict"])
    assert len(notes) == (name in ("glow_class_conditional", "realnvp"))
    model = get_class(config.pop("_target_"))(**config).float()
    model.load_state_dict(case["state_dict"])
    model.eval()
    x, y = case["x"], case["y"]
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x, context=y), case["log_prob"], rtol=1e-6, atol=1e-5)
        sample = model.sample(4, context=y, temperature=0.7, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(sample, case["sample"], rtol=1e-6, atol=1e-5)
