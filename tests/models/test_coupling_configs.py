"""The coupling-flow experiments of issue 14 compose and build what their headers say.

``mnist_idx_flowpp`` is the 10-minute recipe of docs/coupling.md, ``mnist_idx_ablation`` the base
of its ablation (the first seed ran under the old ``mnist_idx_flowpp``: the two must not drift),
``cifar_nsf``/``cifar_flowpp`` the papers' set-ups.
"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from glowlab.data.dequantization import VariationalDequantizer
from glowlab.layers.coupling import AffineCoupling, MixtureCoupling, SplineCoupling
from glowlab.layers.coupling.flowpp_net import FlowppCouplingNet
from glowlab.models import Glow
from glowlab.models.build import build_model
from glowlab.training.module import build_objective

pytestmark = pytest.mark.usefixtures("single_thread")


def _compose(experiment: str, *overrides: str):
    GlobalHydra.instance().clear()
    from glowlab.training.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *overrides])


def _model(cfg):
    """The model as training builds it (``compile`` is the module's option, not the model's)."""
    config = OmegaConf.to_container(cfg.model, resolve=True)
    config.pop("compile", None)
    return build_model(config)


def _couplings(model, cls):
    return [m for m in model.modules() if isinstance(m, cls)]


def test_the_recipe_is_a_small_spline_glow_on_small_bf16_batches():
    cfg = _compose("mnist_idx_flowpp")
    assert (cfg.data.dataset, cfg.data.n_bits, cfg.data.batch_size) == ("mnist_idx", 8, 16)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.max_time == "00:00:10:00"
    model = _model(cfg)
    assert isinstance(model, Glow) and model.image_shape == (1, 28, 28)
    assert len(_couplings(model, SplineCoupling)) == 2 * 8
    objective = build_objective(cfg.objective)
    objective.setup(model, n_bits=8)
    assert isinstance(objective.dequantizer, VariationalDequantizer)


def test_the_ablation_base_differs_from_the_recipe_only_in_batch_and_precision():
    recipe, base = _compose("mnist_idx_flowpp"), _compose("mnist_idx_ablation")
    assert base.data.batch_size == 64 and base.trainer.precision != "bf16-mixed"
    assert base.model == recipe.model and base.objective == recipe.objective and base.module == recipe.module


@pytest.mark.parametrize("overrides, cls", [
    (("model.coupling=affine", "model.coupling_kwargs=null"), AffineCoupling),
    (("model.coupling=mixture", "model.coupling_kwargs=null"), MixtureCoupling),
])
def test_the_ablation_overrides_switch_the_coupling(overrides, cls):
    model = _model(_compose("mnist_idx_ablation", *overrides))
    assert len(_couplings(model, cls)) == 16 and not _couplings(model, SplineCoupling)


def test_the_flowpp_network_is_one_override_away():
    # the experiment's spline arguments are dropped first: an override of a dict merges into it
    cfg = _compose("mnist_idx_flowpp", "model.coupling=affine", "model.hidden_channels=24",
                   "model.coupling_kwargs=null", "+model.coupling_kwargs={net: flowpp, num_blocks: 1}")
    model = _model(cfg)
    nets = [c.net for c in _couplings(model, AffineCoupling)]
    assert len(nets) == 16 and all(isinstance(n, FlowppCouplingNet) and len(n.blocks) == 2 for n in nets)
    x = torch.rand(2, 1, 28, 28) - 0.5
    assert torch.isfinite(model.log_prob(x)).all()


@pytest.mark.parametrize("experiment, cls, kwargs", [
    ("cifar_nsf", SplineCoupling, {"bins": 2}),
    ("cifar_flowpp", MixtureCoupling, {"components": 32}),
])
def test_the_cifar_set_ups_build_their_couplings(experiment, cls, kwargs):
    cfg = _compose(experiment)
    assert cfg.data.dataset == "cifar10" and cfg.data.n_bits == 8
    assert dict(cfg.model.coupling_kwargs).items() >= kwargs.items()
    model = _model(cfg)
    assert model.image_shape == (3, 32, 32) and _couplings(model, cls)
