"""DDP on 2 CPU processes (gloo): identical ActNorm init, identical 1x1 convolutions (plain and LU)
and permutation buffers on every rank, exact test bpd on an odd number of images, one output
directory."""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.conftest import run_script

pytestmark = pytest.mark.slow

TINY_CLI = ["model.depth=2", "model.hidden_channels=16", "trainer.max_epochs=1",
            "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "logger=wandb",
            "extras.print_config=false", "~callbacks.progress_bar", "~callbacks.model_summary"]
ODD_TEST = "data.test_limit=359"  # 2 ranks: 180 + 179; a padding sampler would count one image twice


def _dump(name: str, target: str, folder) -> list[str]:
    return [f"+callbacks.{name}._target_=tests.training.helpers.{target}", f"+callbacks.{name}.dirpath={folder}"]


def _assert_ranks_agree(dump, tag: str, must_contain: str) -> None:
    r0, r1 = (torch.load(dump / f"{tag}_rank{r}.pt") for r in (0, 1))
    assert r0.keys() == r1.keys() and any(must_contain in k for k in r0), sorted(r0)[:20]
    for name in r0:
        assert torch.equal(r0[name], r1[name]), (tag, name)


def test_ddp_cpu_two_processes(tmp_path):
    """`trainer=ddp_cpu` trains on 2 processes: ActNorm parameters equal on both ranks after the
    data-dependent init, every parameter and buffer (LU 1x1 convolutions) equal right after
    initialisation and after step 1, a single run directory with a single wandb run, and test bpd
    equal to a 1-process evaluation of the same checkpoint on an odd number of test images (no
    padded duplicates counted)."""
    logs = tmp_path / "logs"
    dump = tmp_path / "dump"
    proc = run_script("train.py", "trainer=ddp_cpu", *TINY_CLI, ODD_TEST, f"paths.log_dir={logs}",
                      *_dump("dump", "DumpActNormPerRank", dump), *_dump("state", "DumpStatePerRank", dump))
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
    for tag in ("init", "step1"):
        _assert_ranks_agree(dump, tag, "lower")  # the LU factors of every 1x1 convolution
    ddp_test = json.loads((runs[0] / "metrics.json").read_text())["test/bpd"]

    single = tmp_path / "single"
    proc = run_script("eval.py", f"ckpt_path={runs[0] / 'checkpoints' / 'best.ckpt'}",
                      f"hydra.run.dir={single}", "extras.print_config=false", "data.eval_batch_size=50")
    assert proc.returncode == 0, proc.stderr[-4000:]
    single_test = json.loads((single / "metrics.json").read_text())["test/bpd"]
    assert ddp_test == pytest.approx(single_test, abs=1e-5)


@pytest.mark.parametrize("permutation,key", [("invconv", "flows.2.weight"), ("shuffle", "perm")])
def test_ddp_ranks_agree_on_plain_1x1_convs_and_shuffles(tmp_path, permutation, key):
    """Plain 1x1 convolutions (random orthogonal init) and Shuffle's permutation buffers: equal on
    both ranks right after initialisation and after step 1."""
    dump = tmp_path / "dump"
    proc = run_script("train.py", "trainer=ddp_cpu", *TINY_CLI, f"model.permutation={permutation}",
                      "trainer.max_steps=1", "trainer.limit_val_batches=0", "test=false", "logger=csv",
                      f"paths.log_dir={tmp_path / 'logs'}", *_dump("state", "DumpStatePerRank", dump))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for tag in ("init", "step1"):
        _assert_ranks_agree(dump, tag, key)
