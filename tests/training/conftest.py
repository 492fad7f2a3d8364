"""Fixtures for the training stack: Hydra configs composed as `train.py` would, on tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from glowlab.training.config import CONF_DIR, PROJECT_ROOT

# A Glow small enough to train a few steps in seconds on 2 cores.
TINY = [
    "data=digits", "model.depth=2", "model.hidden_channels=16", "data.batch_size=32",
    "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.log_every_n_steps=1",
    "logger=csv", "extras.print_config=false", "callbacks.sample_grid.num_per_temperature=4",
    "~callbacks.progress_bar", "~callbacks.model_summary",
]


def compose_config(name: str, overrides: list[str], output_dir: Path):
    """Compose ``conf/<name>.yaml`` with ``overrides``, writing into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def train_cfg(tmp_path):
    """Factory: ``train_cfg(*extra_overrides)`` -> the composed tiny training config."""
    return lambda *extra: compose_config("train", TINY + list(extra), tmp_path)


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a repo entry point (``train.py``/``eval.py``/...) in a fresh process, offline."""
    # one thread per process: tests run 2 at a time on 2 cores
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    env.pop("WANDB_MODE", None)  # offline mode must come from the config alone
    return subprocess.run([sys.executable, str(PROJECT_ROOT / script), *args], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny digits Glow trained for 4 steps, once per session: ``RUN/checkpoints/{best,last}.ckpt``.
    Tests copy what they damage."""
    from glowlab.training.run import train

    run = tmp_path_factory.mktemp("trained_run")
    train(compose_config("train", TINY + ["~callbacks.sample_grid"], run))
    return run


def compose_eval(ckpt: Path, output_dir: Path, *overrides: str):
    """The eval.py config for ``ckpt``, as ``python eval.py ckpt_path=... [data.KEY=...]`` composes it."""
    from glowlab.training.cli import allow_data_overrides

    extra = allow_data_overrides(list(overrides))
    return compose_config("eval", [f"ckpt_path={ckpt}", "extras.print_config=false", "trainer.accelerator=cpu",
                                   "trainer.limit_test_batches=2", "+trainer.enable_progress_bar=false", *extra],
                          output_dir)
