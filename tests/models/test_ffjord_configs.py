"""conf/model/ffjord.yaml and the FFJORD experiments compose and build the model they describe."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from glowlab.layers.continuous import CNF
from glowlab.models import FFJORD
from glowlab.training.config import CONF_DIR

SHAPES = {"digits": (1, 8, 8), "mnist_idx": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
EXPERIMENTS = ("digits_ffjord", "mnist_idx_ffjord", "mnist_ffjord", "cifar_ffjord")


def _compose(experiment: str | None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}"] if experiment else ["model=ffjord"])


def test_model_config_builds_the_default_small_model():
    cfg = _compose(None)
    model = instantiate(cfg.model)
    assert isinstance(model, FFJORD) and model.image_shape == (1, 8, 8)
    assert set(cfg.model) - {"_target_"} <= set(model.config)  # every key is a constructor argument


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiments_build_a_model_for_their_data(name):
    cfg = _compose(name)
    assert cfg.model._target_ == "glowlab.models.FFJORD"
    model = instantiate(cfg.model)
    assert model.image_shape == SHAPES[cfg.data.dataset]
    blocks = [m for m in model.modules() if isinstance(m, CNF)]
    levels, per_stage = cfg.model.levels, cfg.model.blocks
    assert len(blocks) == per_stage * (2 * levels - 1)
    assert all(b.method == cfg.model.method for b in blocks)
