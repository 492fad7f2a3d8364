"""The SampleGrid callback: a sample the numerical inverse cannot reach skips that grid, with a
warning, instead of ending the run (a logistic-mixture Glow's final grid once did, after training
and before its test)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

from glowlab.core import InversionError
from glowlab.training.callbacks import SampleGrid


class _Module:
    device = torch.device("cpu")
    model = SimpleNamespace(num_classes=0)

    def __init__(self, fail: bool):
        self.fail = fail

    def sample_images(self, n, temperature, context=None, generator=None):
        if self.fail and temperature == 1.0:
            raise InversionError("the logistic-mixture inverse did not reach tol=1e-10 for 3 of 64 elements")
        return torch.rand(n, 1, 8, 8, generator=generator)


def test_an_inversion_error_skips_the_grid_with_a_warning(tmp_path, caplog):
    trainer = SimpleNamespace(is_global_zero=True, loggers=[], current_epoch=0)
    grid = SampleGrid(str(tmp_path), temperatures=(0.7, 1.0), num_per_temperature=2, min_width=8)
    with caplog.at_level(logging.WARNING):
        grid.on_train_end(trainer, _Module(fail=True))
    assert not (tmp_path / "final.png").exists() and grid.last_path is None
    assert "sample grid final skipped" in caplog.text and "tol=1e-10" in caplog.text
    grid.on_train_end(trainer, _Module(fail=False))
    assert (tmp_path / "final.png").exists() and grid.last_path == tmp_path / "final.png"
