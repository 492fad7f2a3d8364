"""Fixtures for the after-training tools: one tiny digits checkpoint, trained once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training.conftest import TINY, compose_config

# Enough steps for the tiny Glow to learn the digits a little (about 3.9 bpd against 5.0 for a
# uniform model); the sample grid callback is off to save time.
TINY_TRAINED = TINY + ["trainer.limit_train_batches=30", "module.warmup_steps=10", "~callbacks.sample_grid"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The run directory of a tiny Glow trained on digits (``checkpoints/best.ckpt``, ``metrics.json``)."""
    from glowlab.training.run import train

    run = tmp_path_factory.mktemp("tiny_run")
    train(compose_config("train", TINY_TRAINED, run))
    assert (run / "checkpoints" / "best.ckpt").is_file()
    return run


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    return tiny_run / "checkpoints" / "best.ckpt"


def read_png(path: Path) -> np.ndarray:
    """A PNG as a float array ``[H, W, C]`` in [0, 1]."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def grid_size(rows: int, cols: int, height: int, width: int, padding: int = 1) -> tuple[int, int]:
    """``(height, width)`` in pixels of torchvision's ``save_image`` grid of ``rows x cols`` tiles."""
    return rows * (height + padding) + padding, cols * (width + padding) + padding


@pytest.fixture(autouse=True)
def single_threaded_children(monkeypatch):
    """Subprocesses and notebook kernels started by these tests use one intra-op thread: for these
    tiny models on a loaded 2-core machine, two threads per process contend and run many times slower."""
    if "OMP_NUM_THREADS" not in os.environ:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
