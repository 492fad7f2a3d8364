"""Bad construction and bad input: clear ValueErrors naming the offending value (GUIDE section 7)."""

from __future__ import annotations

import re

import pytest
import torch

from glowlab.models import NICE, Glow, RealNVP

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

TINY = dict(hidden_channels=4)
SMALL_ARGS = {Glow: dict(depth=1, **TINY), RealNVP: dict(num_blocks=1, **TINY),
              NICE: dict(hidden_features=4, hidden_layers=1)}

BAD_CONSTRUCTIONS = {
    "glow_28x28_levels3": (Glow, dict(image_shape=(1, 28, 28), levels=3),
                           r"28x28 is not divisible by 2\*\*3=8.*levels=3.*levels <= 2"),
    "glow_too_many_levels": (Glow, dict(image_shape=(1, 4, 4), levels=3),
                             r"4x4 is not divisible by 2\*\*3=8.*levels=3"),
    "glow_non_square": (Glow, dict(image_shape=(3, 32, 24), levels=4),
                        r"32x24 is not divisible by 2\*\*4=16.*levels <= 3"),
    "realnvp_too_many_levels": (RealNVP, dict(image_shape=(1, 28, 28), levels=4),
                                r"28x28 is not divisible by 2\*\*3=8.*levels=4.*levels <= 3"),
    "glow_zero_levels": (Glow, dict(image_shape=(1, 8, 8), levels=0), "levels.*got 0"),
    "glow_float_levels": (Glow, dict(image_shape=(1, 8, 8), levels=2.0), "levels.*got 2.0"),
    "glow_zero_depth": (Glow, dict(image_shape=(1, 8, 8), levels=1, depth=0), "depth.*got 0"),
    "realnvp_zero_levels": (RealNVP, dict(image_shape=(1, 8, 8), levels=0), "levels.*got 0"),
    "glow_bad_coupling": (Glow, dict(image_shape=(1, 8, 8), levels=1, coupling="affin"), "coupling.*'affin'"),
    "glow_bad_permutation": (Glow, dict(image_shape=(1, 8, 8), levels=1, permutation="random"),
                             "permutation.*'random'"),
    "realnvp_bad_coupling": (RealNVP, dict(image_shape=(1, 8, 8), levels=1, coupling="additive"),
                             "coupling must be one of.*'additive'"),
    "glow_2d_shape": (Glow, dict(image_shape=(28, 28), levels=1), re.escape("(28, 28)")),
    "glow_zero_channels": (Glow, dict(image_shape=(0, 8, 8), levels=1), re.escape("(0, 8, 8)")),
    "nice_zero_couplings": (NICE, dict(image_shape=(1, 4, 4), num_couplings=0), "num_couplings.*got 0"),
    "nice_bad_prior": (NICE, dict(image_shape=(1, 4, 4), prior="normal"), "prior.*'normal'"),
}


@pytest.mark.parametrize("case", list(BAD_CONSTRUCTIONS))
def test_bad_construction_raises_value_error_naming_the_value(case):
    """Invalid model arguments fail at construction with ValueError, naming the value and the fix."""
    model_cls, kwargs, pattern = BAD_CONSTRUCTIONS[case]
    with pytest.raises(ValueError, match=pattern):
        model_cls(**{**SMALL_ARGS[model_cls], **kwargs})


@pytest.mark.parametrize("model_cls", [Glow, RealNVP, NICE], ids=["glow", "realnvp", "nice"])
@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 16, 16), (2, 3, 8)], ids=["channels", "size", "rank"])
def test_wrong_input_shape_raises_value_error_naming_both_shapes(model_cls, shape):
    """Calling a model on data of another shape (e.g. a 3-channel model on 1-channel images) raises a
    ValueError naming the expected image shape and the shape received, for forward and log_prob."""
    model = model_cls(image_shape=(3, 8, 8), **SMALL_ARGS[model_cls])
    x = torch.zeros(shape)
    for call in (model, model.log_prob):
        with pytest.raises(ValueError, match=re.escape(str(shape))) as info:
            call(x)
        assert "3, 8, 8" in str(info.value)


def test_inverse_with_wrong_number_of_latents():
    """inverse() with a latent list of the wrong length raises ValueError naming both counts."""
    model = Glow((1, 4, 4), levels=2, depth=1, **TINY)
    zs, _ = model(torch.rand(2, 1, 4, 4) - 0.5)
    with pytest.raises(ValueError, match="expected 2 latents.*got 1"):
        model.inverse(zs[1:])


@pytest.mark.parametrize("model_cls", [Glow, RealNVP, NICE], ids=["glow", "realnvp", "nice"])
def test_out_of_range_labels_rejected(model_cls):
    """A class-conditional model given a label outside [0, num_classes) raises ValueError naming it."""
    levels = {} if model_cls is NICE else dict(levels=1)  # NICE is single-scale
    model = model_cls(image_shape=(1, 4, 4), num_classes=3, **levels, **SMALL_ARGS[model_cls])
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        model.log_prob(torch.zeros(2, 1, 4, 4), torch.tensor([0, 3]))


def test_bad_context_options_raise_value_errors_naming_them():
    """Conditioning on a label and a tensor at once, or a non-boolean condition_couplings, fails at
    construction with the value named."""
    with pytest.raises(ValueError, match="num_classes=3 and context_features=4"):
        Glow((1, 4, 4), levels=1, num_classes=3, context_features=4, **SMALL_ARGS[Glow])
    with pytest.raises(ValueError, match="condition_couplings.*'yes'"):
        Glow((1, 4, 4), levels=1, num_classes=3, condition_couplings="yes", **SMALL_ARGS[Glow])


def test_unconditional_model_has_no_classifier():
    model = Glow((1, 4, 4), levels=1, **SMALL_ARGS[Glow])
    assert model.context_kind is None
    with pytest.raises(ValueError, match="num_classes=0"):
        model.class_logits(torch.zeros(2, 4, 2, 2))
