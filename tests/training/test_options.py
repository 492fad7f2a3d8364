"""Options that used to fail or mislead: logger=null, runs without a logger, bf16 on a CPU without
native bf16, a bad model argument, a relative data.root, a validation set rounded to nothing."""

from __future__ import annotations

import logging

import pytest
import torch

from glowlab.training import precision
from glowlab.training.cli import allow_null_groups
from glowlab.training.run import train
from tests.training.conftest import run_script

FAST = ["~callbacks.sample_grid", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1"]


def test_logger_null_is_rewritten_to_a_deletion():
    """Hydra refuses ``group=null`` on the command line ("Config group override must be a string")."""
    assert allow_null_groups(["logger=null", "logger=none", "callbacks=null", "model.x=null", "logger=csv"]) == \
        ["~logger", "~logger", "~callbacks", "model.x=null", "logger=csv"]


@pytest.mark.slow
def test_train_cli_with_logger_null(tmp_path):
    proc = run_script("train.py", "logger=null", "model.depth=1", "model.hidden_channels=8", "trainer.max_epochs=1",
                      *FAST, "extras.print_config=false", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("overrides", [["~logger"], ["debug=default", "trainer.detect_anomaly=false"]])
def test_runs_without_a_logger_train(train_cfg, overrides):
    """The learning-rate monitor no longer requires a logger (debug=default sets logger: null)."""
    metrics = train(train_cfg(*FAST, *overrides))
    assert metrics["test/bpd"] < 5.0


def test_bf16_on_a_cpu_without_native_bf16_warns_once(train_cfg, monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="glowlab.training.precision"):
        train(train_cfg(*FAST, "trainer.precision=bf16-mixed"))
        train(train_cfg(*FAST, "trainer.precision=bf16-mixed"))
    warnings = [r for r in caplog.records if "without native bfloat16" in r.getMessage()]
    assert len(warnings) == 1 and "trainer.precision=32-true" in warnings[0].getMessage()


def test_no_bf16_warning_where_bf16_is_native_or_not_chosen(monkeypatch):
    class Trainer:
        precision, is_global_zero = "bf16-mixed", True
        strategy = type("S", (), {"root_device": torch.device("cpu")})

    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert not precision.warn_if_slow_bf16(Trainer())
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.warn_if_slow_bf16(Trainer())
    Trainer.precision = "32-true"
    assert not precision.warn_if_slow_bf16(Trainer())


def test_bad_model_argument_names_the_config_key(train_cfg):
    with pytest.raises(ValueError, match=r"num_channels >= 1.*model\.hidden_channels=0"):
        train(train_cfg("model.hidden_channels=0"))


def test_relative_data_root_is_stored_absolute(train_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(train_cfg(*FAST, "data.root=rel/digits"))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["data_config"]["root"] == str(tmp_path / "rel" / "digits")


def test_validation_set_rounded_to_nothing_is_reported(train_cfg):
    with pytest.warns(UserWarning, match=r"data.val_size=0.1 of 3 training images holds out none"):
        metrics = train(train_cfg(*FAST, "data.train_limit=3"))
    assert metrics["best/val_bpd"] != metrics["best/val_bpd"]  # NaN, now with a reason given
