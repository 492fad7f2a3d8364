"""Bad input gets an error that names the value and says what to do."""

from __future__ import annotations

import pytest
import torch

from glowlab.training.config import CheckpointError, load_checkpoint
from glowlab.training.run import train
from tests.training.conftest import run_script


def test_misspelled_override_names_the_key():
    proc = run_script("train.py", "trainer.max_epochz=1", "extras.print_config=false")
    assert proc.returncode != 0
    assert "trainer.max_epochz" in proc.stderr


def test_channel_mismatch_names_both_shapes(train_cfg):
    with pytest.raises(ValueError, match=r"(?s)\(1, 8, 8\).*\(3, 8, 8\)|\(3, 8, 8\).*\(1, 8, 8\)"):
        train(train_cfg("model.image_shape=[3,8,8]"))


def test_image_size_not_divisible_by_levels(train_cfg):
    with pytest.raises(ValueError, match=r"8x8.*2\*\*4"):
        train(train_cfg("model.levels=4", "model.image_shape=[1,8,8]", "data.image_size=null"))


def test_missing_dataset_offline_names_root(train_cfg, tmp_path):
    root = tmp_path / "nowhere" / "cifar10"
    with pytest.raises(Exception, match="nowhere") as info:
        train(train_cfg("data=cifar10", f"data.root={root}", "data.download=false",
                        "model.image_shape=[3,32,32]", "model.levels=2"))
    assert "download" in str(info.value).lower()


def test_truncated_checkpoint_names_the_file(train_cfg, tmp_path):
    train(train_cfg())
    good = tmp_path / "checkpoints" / "last.ckpt"
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        train(train_cfg(f"ckpt_path={bad}"))
    proc = run_script("eval.py", f"ckpt_path={bad}", "extras.print_config=false")
    assert proc.returncode != 0 and "truncated.ckpt" in proc.stderr


def test_checkpoint_of_another_kind_is_rejected(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a glowlab checkpoint"):
        load_checkpoint(other)
