"""Bad construction and bad input: clear ValueErrors naming the offending value (GUIDE section 7)."""

from __future__ import annotations

import re

import pytest
import torch

from glowlab.models import NICE, Glow, RealNVP

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

TINY = dict(hidden_channels=4)


@pytest.mark.parametrize(("build", "pattern"), [
    (lambda: Glow((1, 28, 28), levels=3, depth=1, **TINY), r"28x28 is not divisible by 2\*\*3=8.*levels=3.*levels <= 2"),
    (lambda: Glow((1, 4, 4), levels=3, depth=1, **TINY), r"4x4 is not divisible by 2\*\*3=8.*levels=3"),
    (lambda: Glow((3, 32, 24), levels=4, depth=1, **TINY), r"32x24 is not divisible by 2\*\*4=16.*levels <= 3"),
    (lambda: RealNVP((1, 28, 28), levels=4, **TINY), r"28x28 is not divisible by 2\*\*3=8.*levels=4.*levels <= 3"),
    (lambda: Glow((1, 8, 8), levels=0, depth=1, **TINY), "levels.*got 0"),
    (lambda: Glow((1, 8, 8), levels=2.0, depth=1, **TINY), "levels.*got 2.0"),
    (lambda: Glow((1, 8, 8), levels=1, depth=0, **TINY), "depth.*got 0"),
    (lambda: RealNVP((1, 8, 8), levels=0, **TINY), "levels.*got 0"),
    (lambda: Glow((1, 8, 8), levels=1, depth=1, coupling="affin", **TINY), "coupling.*'affin'"),
    (lambda: Glow((1, 8, 8), levels=1, depth=1, permutation="random", **TINY), "permutation.*'random'"),
    (lambda: Glow((28, 28), levels=1, depth=1, **TINY), re.escape("(28, 28)")),
    (lambda: Glow((0, 8, 8), levels=1, depth=1, **TINY), re.escape("(0, 8, 8)")),
    (lambda: NICE((1, 4, 4), num_couplings=0), "num_couplings.*got 0"),
    (lambda: NICE((1, 4, 4), prior="normal"), "prior.*'normal'"),
])
def test_bad_construction_raises_value_error_naming_the_value(build, pattern):
    """Invalid model arguments fail at construction with ValueError, naming the value and the fix."""
    with pytest.raises(ValueError, match=pattern):
        build()


@pytest.mark.parametrize("build", [
    lambda: Glow((3, 8, 8), levels=2, depth=1, **TINY),
    lambda: RealNVP((3, 8, 8), levels=2, num_blocks=1, **TINY),
    lambda: NICE((3, 8, 8), num_couplings=2, hidden_features=4, hidden_layers=1),
], ids=["glow", "realnvp", "nice"])
@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 16, 16), (2, 3, 8)], ids=["channels", "size", "rank"])
def test_wrong_input_shape_raises_value_error_naming_both_shapes(build, shape):
    """Calling a model on data of another shape (e.g. a 3-channel model on 1-channel images) raises a
    ValueError naming the expected image shape and the shape received, for forward and log_prob."""
    model = build()
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


@pytest.mark.parametrize("build", [
    lambda: Glow((1, 4, 4), levels=1, depth=1, num_classes=3, **TINY),
    lambda: NICE((1, 4, 4), num_couplings=1, hidden_features=4, hidden_layers=1, num_classes=3),
], ids=["glow", "nice"])
def test_out_of_range_labels_rejected(build):
    """A class-conditional model given a label outside [0, num_classes) raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        build().log_prob(torch.zeros(2, 1, 4, 4), torch.tensor([0, 3]))
