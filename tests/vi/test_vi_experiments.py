"""The VI and VAE experiments compose, build the right models, and run end to end on tiny settings;
scripts/fit_energy.py writes its figure and metrics."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from glowlab.models.vae import FlowVAE
from glowlab.training.run import train
from glowlab.vi import VariationalFlow
from tests.training.conftest import PROJECT_ROOT, compose_config

QUIET = ["logger=csv", "extras.print_config=false", "~callbacks.progress_bar", "~callbacks.model_summary",
         "trainer=cpu"]


@pytest.mark.parametrize("name", ["u1", "u2", "u3", "u4"])
def test_vi_experiments_compose(name, tmp_path):
    cfg = compose_config("train", [f"experiment=vi_{name}"], tmp_path)
    assert cfg.objective.target.name == name and cfg.objective.anneal_steps == 10_000
    assert cfg.objective.beta0 == 0.01 and cfg.callbacks.sample_grid is None and "data" not in cfg
    q = instantiate(cfg.model)
    assert isinstance(q, VariationalFlow) and q.flow == "planar" and q.length == 32
    cfg = compose_config("train", ["experiment=vi_u1", "model.flow=radial", "model.length=8"], tmp_path)
    q = instantiate(cfg.model)
    assert q.flow == "radial" and len(q.sampler) == 8


@pytest.mark.parametrize("experiment,shape", [("vae_digits", (1, 8, 8)), ("vae_mnist_idx", (1, 28, 28))])
def test_vae_experiments_compose(experiment, shape, tmp_path):
    cfg = compose_config("train", [f"experiment={experiment}", "model.posterior=iaf", "model.length=2"], tmp_path)
    vae = instantiate(cfg.model)
    assert isinstance(vae, FlowVAE) and vae.image_shape == shape and vae.posterior.flow == "iaf"
    assert cfg.callbacks.iwae.k == 1000


@pytest.mark.slow
def test_train_vi_u2_end_to_end(tmp_path):
    cfg = compose_config("train", ["experiment=vi_u2", "objective.steps_per_epoch=5", "trainer.max_epochs=1",
                                   "model.length=2", "callbacks.vi_report.samples=10000", *QUIET], tmp_path)
    metrics = train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("elbo", "log_z", "kl"):
        assert key in saved and saved[key] == pytest.approx(metrics[key])
    assert saved["kl"] > 0 and saved["log_z"] == pytest.approx(2.1129, abs=1e-3)
    assert (tmp_path / "vi_u2.png").stat().st_size > 1000


@pytest.mark.slow
def test_train_vae_digits_end_to_end(tmp_path):
    cfg = compose_config("train", ["experiment=vae_digits", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                                   "trainer.limit_val_batches=1", "trainer.limit_test_batches=2",
                                   "callbacks.iwae.k=10", *QUIET], tmp_path)
    train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/iwae_images"] == 360  # all test images, whatever limit_test_batches says
    assert saved["test/nll_iwae"] < -saved["test/elbo"] + 5  # an estimate near or below the bound
    assert saved["test/nll_iwae_se"] > 0


def test_fit_energy_script(tmp_path):
    import runpy

    module = runpy.run_path(str(PROJECT_ROOT / "scripts" / "fit_energy.py"), run_name="fit_energy")
    stats = module["main"](["--target", "u4", "--length", "2", "--steps", "5", "--eval-samples", "500",
                            "--png", str(tmp_path / "u4.png"), "--json", str(tmp_path / "u4.json")])
    assert (tmp_path / "u4.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "u4.json").read_text())
    assert saved["kl"] == pytest.approx(stats["kl"]) and saved["n"] == 500 and saved["steps"] == 5
