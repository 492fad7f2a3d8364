"""Nothing lost: a timed last.ckpt, a checkpoint on SIGTERM/SIGINT, an exact mid-epoch resume, and
a resumed run scored on its own checkpoints."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
import torch

from glowlab.training.run import train
from tests.training.conftest import TINY, compose_config

SHORT = ["~callbacks.sample_grid", "trainer.max_epochs=2"]


def _probe(name: str, target: str, **kwargs) -> list[str]:
    return [f"+callbacks.{name}._target_=tests.training.helpers.{target}"] + \
        [f"+callbacks.{name}.{k}={v}" for k, v in kwargs.items()]


def _step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def _batches(path) -> dict[int, str]:
    return {step: digest for step, digest in map(json.loads, path.read_text().splitlines())}


def test_timed_checkpoint_survives_a_crash(train_cfg, tmp_path):
    """every_n_minutes=0 saves after every step: a run that dies at step 3 of its first epoch,
    before any validation, still leaves last.ckpt at step 3."""
    cfg = train_cfg(*SHORT, "callbacks.last_checkpoint.every_n_minutes=0", *_probe("crash", "CrashAtStep", step=3))
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg)
    assert _step(tmp_path / "checkpoints" / "last.ckpt") == 3


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_step_then_stops(train_cfg, tmp_path, signum):
    """The signal arrives as step 2's batch starts: that step finishes, last.ckpt holds step 3
    (no validation ran yet), the run stops (SIGTERM: exit status 143; SIGINT: Lightning's
    KeyboardInterrupt exit) and the previous signal handlers are back."""
    before = signal.getsignal(signum)
    cfg = train_cfg(*SHORT, *_probe("kill", "SignalAtStep", step=2, signum=int(signum)))
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    assert stop.value.code == (143 if signum == signal.SIGTERM else 1)
    assert _step(tmp_path / "checkpoints" / "last.ckpt") == 3
    assert signal.getsignal(signum) == before


@pytest.mark.slow
def test_resume_mid_epoch_sees_the_remaining_batches_in_order(train_cfg, tmp_path):
    """Uninterrupted: 8 steps over 2 epochs. Interrupted by SIGTERM after step 3 and resumed from
    last.ckpt: steps 3..7 train on the same batches as the uninterrupted run, in the same order."""
    whole, cut, resumed = tmp_path / "whole.jsonl", tmp_path / "cut.jsonl", tmp_path / "resumed.jsonl"
    train(train_cfg(*SHORT, *_probe("rec", "RecordBatches", path=whole)))
    with pytest.raises(SystemExit):
        train(train_cfg(*SHORT, *_probe("rec", "RecordBatches", path=cut),
                        *_probe("kill", "SignalAtStep", step=2)))
    last = tmp_path / "interrupted.ckpt"
    shutil.copy(tmp_path / "checkpoints" / "last.ckpt", last)
    assert _step(last) == 3
    train(train_cfg(*SHORT, f"ckpt_path={last}", *_probe("rec", "RecordBatches", path=resumed)))
    expected, got = _batches(whole), _batches(resumed)
    assert sorted(got) == [3, 4, 5, 6, 7]
    assert [got[s] for s in range(3, 8)] == [expected[s] for s in range(3, 8)]
    assert [_batches(cut)[s] for s in range(3)] == [expected[s] for s in range(3)]


def test_resumed_run_tests_its_own_checkpoint(train_cfg, tmp_path):
    """Run A (4 steps, validated) is resumed into a new directory B for one more step, which ends
    before B's first validation; A's folder has been removed. B's test uses B's own last.ckpt,
    not A's best.ckpt (whose path B inherited from the checkpoint)."""
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    train(compose_config("train", TINY + ["~callbacks.sample_grid"], run_a))
    moved = shutil.copy(run_a / "checkpoints" / "last.ckpt", tmp_path / "a_last.ckpt")
    shutil.rmtree(run_a)
    seen = tmp_path / "tested.txt"
    # max_epochs=3: with max_steps set, Lightning counts the finished epoch restored from A's
    # epoch-end checkpoint once more, so max_epochs=2 would end B before any step
    metrics = train(compose_config("train", TINY + [
        "~callbacks.sample_grid", "trainer.max_epochs=3", "trainer.max_steps=5", f"ckpt_path={moved}",
        *_probe("seen", "RecordTestCheckpoint", path=seen)], run_b))
    assert seen.read_text() == str(run_b / "checkpoints" / "last.ckpt")
    assert _step(run_b / "checkpoints" / "last.ckpt") == 5 and metrics["test/bpd"] < 5.0
