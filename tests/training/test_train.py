"""End-to-end training through Hydra: artefacts, resume, mixed precision."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from glowlab.training.run import train
from tests.training.conftest import run_script


def test_train_cli_writes_checkpoints_metrics_samples_and_logs(tmp_path):
    """`python train.py` trains a few steps and leaves a checkpoint, a metrics file whose test bpd
    is finite and plausible (between 0 and n_bits), a PNG sample grid, and logs from all three
    loggers: wandb offline (no account, no network), CSV and TensorBoard."""
    out = tmp_path / "run"
    proc = run_script("train.py", "model.depth=2", "model.hidden_channels=16", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                      "trainer.limit_test_batches=2", "logger=many", "extras.print_config=false",
                      "trainer.log_every_n_steps=1",
                      f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "checkpoints" / "best.ckpt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 < metrics["test/bpd"] < 5.0  # digits are 5-bit: a uniform model gives exactly 5
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    assert any(r.get("val/bpd") for r in rows) and any(r.get("train/bpd") for r in rows)
    grid = out / "samples" / "final.png"
    assert grid.is_file() and grid.stat().st_size > 100
    from PIL import Image

    # 8x8 digits, 8 per row: a 73 px raw grid, enlarged 4x by nearest neighbour; the raw one kept
    assert Image.open(grid).size[0] == 4 * Image.open(out / "samples" / "final_raw.png").size[0] == 292
    offline_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))


def test_last_checkpoint_is_the_latest_state_even_when_val_stops_improving(train_cfg, tmp_path):
    """last.ckpt (for resuming) holds the final step even when val/bpd has not improved since
    epoch 0 (lr 0 keeps it constant); best.ckpt stays at epoch 0. Lightning's own ``save_last``
    rewrites last.ckpt only together with best.ckpt."""
    train(train_cfg("module.lr=0.0", "trainer.max_epochs=3"))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 12 and last["epoch"] == 2
    assert best["global_step"] == 4


def test_last_checkpoint_written_when_training_ends_between_validations(train_cfg, tmp_path):
    """max_steps ends the run in the middle of epoch 1 and before its first validation (every 2nd
    epoch): last.ckpt still holds step 6."""
    train(train_cfg("trainer.max_epochs=4", "trainer.max_steps=6", "trainer.check_val_every_n_epoch=2"))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6


def test_logged_parts_add_up_to_bpd(train_cfg):
    """prior_bpd + logdet_bpd + n_bits equals the logged test bpd (closed-form decomposition)."""
    m = train(train_cfg())
    assert m["test/prior_bpd"] + m["test/logdet_bpd"] + 5 == pytest.approx(m["test/bpd"], abs=1e-4)


def test_loss_decreases_on_digits(train_cfg):
    """A few hundred images of training lower the validation bpd below the uniform model's 5.0."""
    m = train(train_cfg("trainer.limit_train_batches=20", "trainer.max_epochs=2",
                        "module.warmup_steps=10"))
    assert m["val/bpd"] < 4.5, m


def test_resume_restores_exact_state(train_cfg, tmp_path):
    """Resuming from last.ckpt starts at the saved step with the saved model, EMA, ActNorm,
    optimiser and scheduler state, and continues to the requested number of epochs."""
    train(train_cfg("module.ema_decay=0.9"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 4

    probe = tmp_path / "state_at_resume.pt"
    cfg = train_cfg("module.ema_decay=0.9", "trainer.max_epochs=2", f"ckpt_path={last}",
                    "+callbacks.probe._target_=tests.training.helpers.SaveStateAtTrainStart",
                    f"+callbacks.probe.path={probe}")
    train(cfg)
    at_resume = torch.load(probe, weights_only=False)
    assert at_resume["global_step"] == 4
    assert at_resume["state_dict"].keys() == saved["state_dict"].keys()
    for k, v in saved["state_dict"].items():
        assert torch.equal(at_resume["state_dict"][k], v), k
    assert any(k.endswith("initialized") and bool(v) for k, v in saved["state_dict"].items())
    assert any(k.startswith("ema.shadow") for k in saved["state_dict"])
    for k, s in saved["optimizer_states"][0]["state"].items():
        for n, t in s.items():
            assert torch.equal(at_resume["optimizer"]["state"][k][n], t), (k, n)
    assert at_resume["lr"] == pytest.approx(saved["lr_schedulers"][0]["_last_lr"][0])
    final = torch.load(last, map_location="cpu", weights_only=False)
    assert final["global_step"] == 8 and final["epoch"] == 1


def test_bf16_mixed_on_cpu_trains_with_finite_loss(train_cfg):
    """bf16-mixed autocast on the CPU trains with a finite loss; logdets stay float32."""
    m = train(train_cfg("trainer.precision=bf16-mixed"))
    assert math.isfinite(m["train/bpd"]) and math.isfinite(m["test/bpd"])


def test_eval_cli_matches_training_test_bpd(tmp_path):
    """`python eval.py ckpt_path=best.ckpt` reproduces the test bpd the training run reported
    (deterministic evaluation noise), on the same test images."""
    out = tmp_path / "run"
    proc = run_script("train.py", "model.depth=2", "model.hidden_channels=16", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "logger=csv",
                      "extras.print_config=false", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((out / "metrics.json").read_text())["test/bpd"]
    ev = tmp_path / "eval"
    # another batch size changes nothing: the evaluation noise is a function of each image
    proc = run_script("eval.py", f"ckpt_path={out / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={ev}",
                      "data.eval_batch_size=7", "extras.print_config=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((ev / "metrics.json").read_text())["test/bpd"]
    assert evaluated == pytest.approx(trained, abs=1e-5)


def test_eval_cli_tightens_the_variational_bound_with_k_draws(tmp_path):
    """`eval.py k=4` on a run with a learned dequantiser: `test/bpd` is the training run's, the
    in-process k = 1 estimate reproduces it, and averaging 4 importance weights per image gives a
    lower (tighter) bound."""
    from glowlab.training.run import importance_weighted_bpd

    out = tmp_path / "run"
    proc = run_script("train.py", "model.depth=2", "model.hidden_channels=16", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "logger=csv",
                      "extras.print_config=false", "++objective.dequantization.kind=variational",
                      "++objective.dequantization.hidden_channels=4", "++objective.dequantization.depth=1",
                      f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((out / "metrics.json").read_text())["test/bpd"]
    ckpt = out / "checkpoints" / "best.ckpt"
    ev = tmp_path / "eval"
    proc = run_script("eval.py", f"ckpt_path={ckpt}", "k=4", f"hydra.run.dir={ev}", "extras.print_config=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["test/bpd"] == pytest.approx(trained, abs=1e-5)
    assert importance_weighted_bpd(str(ckpt), "test", 1)["test/bpd_k1"] == pytest.approx(trained, abs=1e-4)
    assert metrics["test/bpd_k4"] < metrics["test/bpd"] - 1e-4
    assert metrics["test/bpd_k4_stderr"] > 0


def test_eval_refuses_a_k_that_is_not_a_positive_integer(tmp_path):
    """`eval.py k=0` names the value and the fix before any evaluation runs."""
    proc = run_script("eval.py", f"ckpt_path={tmp_path / 'missing.ckpt'}", "k=0", f"hydra.run.dir={tmp_path / 'ev'}",
                      "extras.print_config=false")
    assert proc.returncode != 0 and "must be a positive integer, got 0" in proc.stderr and "k=16" in proc.stderr
