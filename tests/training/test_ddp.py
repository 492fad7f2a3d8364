"""DDP on 2 CPU processes (gloo): identical ActNorm init, exact test bpd, one output directory."""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.conftest import run_script

pytestmark = pytest.mark.slow

TINY_CLI = ["model.depth=2", "model.hidden_channels=16", "trainer.max_epochs=1",
            "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "logger=wandb",
            "extras.print_config=false", "~callbacks.progress_bar", "~callbacks.model_summary"]


def test_ddp_cpu_two_processes(tmp_path):
    """`trainer=ddp_cpu` trains on 2 processes: ActNorm parameters equal on both ranks after the
    data-dependent init, a single run directory with a single wandb run, and test bpd equal to a 1-process evaluation of
    the same checkpoint (no padded duplicates counted)."""
    logs = tmp_path / "logs"
    dump = tmp_path / "dump"
    proc = run_script("train.py", "trainer=ddp_cpu", *TINY_CLI, f"paths.log_dir={logs}",
                      "+callbacks.dump._target_=tests.training.helpers.DumpActNormPerRank",
                      f"+callbacks.dump.dirpath={dump}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = list((logs / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    assert len(list((runs[0] / "wandb").glob("offline-run-*"))) == 1  # one wandb run, from rank 0
    r0 = torch.load(dump / "actnorm_rank0.pt")
    r1 = torch.load(dump / "actnorm_rank1.pt")
    assert r0.keys() == r1.keys() and len(r0) > 0
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    # the ranks saw different first batches, so equal values prove the statistics were shared
    ddp_test = json.loads((runs[0] / "metrics.json").read_text())["test/bpd"]

    # digits' test split (360 images) does not divide evenly into 2 ranks x batch 64; a padded
    # sampler would count duplicates and shift the mean
    single = tmp_path / "single"
    proc = run_script("eval.py", f"ckpt_path={runs[0] / 'checkpoints' / 'best.ckpt'}",
                      f"hydra.run.dir={single}", "extras.print_config=false", "data.eval_batch_size=50")
    assert proc.returncode == 0, proc.stderr[-4000:]
    single_test = json.loads((single / "metrics.json").read_text())["test/bpd"]
    assert ddp_test == pytest.approx(single_test, abs=1e-5)
