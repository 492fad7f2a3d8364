"""Hydra sweeps of train.py: a run dir and a wandb run per job, failed jobs recorded, summary tables."""

from __future__ import annotations

import csv
import json
import math

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from glowlab.training.config import CONF_DIR
from tests.training.conftest import run_script

# a few optimiser steps of a one-step Glow: each job takes seconds
FAST = ["model.depth=1", "model.hidden_channels=8", "data.batch_size=32", "trainer=cpu", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "module.warmup_steps=2", "extras.print_config=false", "~callbacks.progress_bar",
        "~callbacks.model_summary", "~callbacks.sample_grid"]


def summary_rows(sweep_dir):
    return list(csv.DictReader((sweep_dir / "summary.csv").open()))


@pytest.mark.slow
def test_grid_sweep_one_run_dir_and_wandb_run_per_job_and_failures_recorded(tmp_path):
    """model.levels=1,4,2 on 8x8 digits: levels=4 cannot fit (8 is not divisible by 16). The sweep
    goes on past the failure: 3 run dirs, 2 with their own checkpoint and their own offline wandb
    run, and a summary with 3 rows, the failed one carrying the model's error."""
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", "-m", *FAST, "logger=wandb", "model.levels=1,4,2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = summary_rows(sweep)
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert [r["overrides"].split()[-1] for r in rows] == ["model.levels=1", "model.levels=4", "model.levels=2"]
    assert "divisible" in rows[1]["error"] and rows[1]["test_bpd"] == ""
    wandb_runs = set()
    for job in ("0", "2"):
        row = rows[int(job)]
        assert 0 < float(row["test_bpd"]) < 5.0 and 0 < float(row["best_val_bpd"]) < 5.0
        assert float(row["wall_time_s"]) > 0
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert float(row["test_bpd"]) == pytest.approx(metrics["test/bpd"])
        runs = list((sweep / job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1
        wandb_runs.add(runs[0].name.rsplit("-", 1)[-1])
    assert len(wandb_runs) == 2, "the two jobs share a wandb run"
    assert not (sweep / "1" / "checkpoints").exists()
    md = (sweep / "summary.md").read_text()
    assert md.count("\n| ") == 4 and "| failed | model.levels=4 |" in md  # header + 3 rows


@pytest.mark.slow
def test_optuna_sweep_runs_trials_and_writes_summary(tmp_path):
    """hparams_search=digits_optuna with 2 trials: both jobs run with the lr the sampler chose, the
    sweeper records the best value, and the summary has 2 rows."""
    sweep = tmp_path / "optuna"
    proc = run_script("train.py", "-m", "hparams_search=digits_optuna", "hydra.sweeper.n_trials=2", *FAST,
                      "logger=csv", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = summary_rows(sweep)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    lrs = [float(o.split("=")[1]) for r in rows for o in r["overrides"].split() if o.startswith("module.lr=")]
    assert len(lrs) == 2 and lrs[0] != lrs[1] and all(3e-4 <= lr <= 3e-3 for lr in lrs)
    best = (sweep / "optimization_results.yaml").read_text()
    best_value = float(best.split("best_value:")[1].split()[0])
    assert best_value == pytest.approx(min(float(r["best_val_bpd"]) for r in rows))
    assert (sweep / "summary.md").is_file()


@pytest.mark.parametrize("name", ["digits_optuna", "cifar_glow_optuna"])
def test_hparams_search_configs_compose(name):
    """Both search configs select the Optuna sweeper, minimise val/bpd and parse their search space."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [f"hparams_search={name}"] + (["experiment=cifar_glow"] if "cifar" in name else [])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert cfg.optimized_metric == "val/bpd" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert parsed and all(p.is_sweep_override() for p in parsed)
    assert "sweep_summary" in cfg.hydra.callbacks


def test_failed_job_returns_the_worst_value(monkeypatch, tmp_path):
    """Inside a multirun a crashing or diverged job returns inf (-inf when maximising; never nan,
    which optuna 2.10 cannot record) and leaves its error in status.json."""
    from glowlab.training import sweeps

    class Hydra:  # the parts of HydraConfig.get() that run_sweep_job reads
        sweeper = {"direction": "minimize"}
        runtime = type("R", (), {"output_dir": str(tmp_path)})

    monkeypatch.setattr(sweeps.HydraConfig, "get", staticmethod(lambda: Hydra))

    def boom(cfg):
        raise RuntimeError("out of memory")

    assert sweeps.run_sweep_job(boom, None, "val/bpd") == math.inf
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: out of memory"
    assert sweeps.run_sweep_job(lambda cfg: {"val/bpd": float("nan")}, None, "val/bpd") == math.inf
    assert sweeps.run_sweep_job(lambda cfg: {"val/bpd": 3.5}, None, "val/bpd") == 3.5
    Hydra.sweeper = {"direction": "maximize"}
    assert sweeps.run_sweep_job(boom, None, "val/bpd") == -math.inf
