"""build_model: classes and factory functions as `_target_`, and a clear error without one."""

from __future__ import annotations

import pytest
import torch

from glowlab.models.build import build_model


def test_a_factory_function_target_builds_a_density():
    """Glow with an autoregressive top prior is made by a function; configs can still name it."""
    model = build_model({"_target_": "glowlab.image.autoregressive_prior.glow_with_autoregressive_prior",
                         "image_shape": [1, 8, 8], "levels": 2, "depth": 1, "hidden_channels": 8})
    x = torch.rand(3, 1, 8, 8) - 0.5
    assert model.log_prob(x).shape == (3,)
    assert torch.isfinite(model.log_prob(x)).all()


def test_a_config_without_target_is_refused_by_name():
    with pytest.raises(ValueError, match="_target_"):
        build_model({"image_shape": [1, 8, 8]})
