"""Checkpoints: written atomically with a checksum; damaged, old or mismatched files and data
overrides that change the model's data are refused with a message naming the file."""

from __future__ import annotations

import os
import re
import shutil
import zipfile

import pytest
import torch

import glowlab
from glowlab.training.checkpoint_checks import (
    CHECKSUM_KEY,
    VERSION_KEY,
    CheckpointError,
    check_data_overrides,
    state_dict_checksum,
)
from glowlab.training.checkpointing import AtomicCheckpointIO
from glowlab.training.config import load_checkpoint
from glowlab.training.run import evaluate, train
from tests.training.conftest import compose_eval


def _resave(ckpt: dict, path, checksum: bool = True):
    """Save an edited checkpoint, with its checksum brought up to date (or removed)."""
    if checksum:
        ckpt[CHECKSUM_KEY] = state_dict_checksum(ckpt["state_dict"])
    else:
        ckpt.pop(CHECKSUM_KEY, None)
    torch.save(ckpt, path)
    return path


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_training_checkpoints_carry_a_checksum_and_the_version(trained_run):
    """The trainer config wires AtomicCheckpointIO in, so every checkpoint of a run has them."""
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = _load(trained_run / "checkpoints" / name)
        assert ckpt[CHECKSUM_KEY] == state_dict_checksum(ckpt["state_dict"]) and ckpt[VERSION_KEY]


def test_checkpoint_io_renames_within_the_destination_folder(tmp_path, monkeypatch):
    """Patched at the rename: the file that replaces the checkpoint was written in its own folder
    and is complete. Lightning's default writes it in /tmp and moves it, a copy across filesystems."""
    renames = []
    real_replace, real_rename = os.replace, os.rename

    def record(real):
        def rename(src, dst):
            renames.append((os.path.dirname(os.path.abspath(src)), _load(src)["global_step"]))
            return real(src, dst)
        return rename

    monkeypatch.setattr(os, "replace", record(real_replace))
    monkeypatch.setattr(os, "rename", record(real_rename))
    path = tmp_path / "ckpts" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 7}, path)
    assert renames == [(str(path.parent), 7)]
    assert _load(path)[CHECKSUM_KEY] == state_dict_checksum({"w": torch.ones(3)})


def test_checkpoint_io_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 1}, path)

    def full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 2}, path)
    monkeypatch.undo()
    assert _load(path)["global_step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def _flip_a_bit_in_the_largest_tensor(path):
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))


def test_bit_flip_in_tensor_data_is_detected(trained_run, tmp_path):
    bad = shutil.copy(trained_run / "checkpoints" / "best.ckpt", tmp_path / "flipped.ckpt")
    _flip_a_bit_in_the_largest_tensor(bad)
    torch.load(bad, map_location="cpu", weights_only=False)  # PyTorch itself loads it silently
    with pytest.raises(CheckpointError, match=r"flipped.ckpt is damaged.*checksum"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="flipped.ckpt"):
        evaluate(compose_eval(bad, tmp_path / "eval"))


def test_non_finite_evaluation_fails(trained_run, tmp_path):
    """Weights that make the bpd inf or NaN (checksum intact): evaluate raises after writing metrics.json."""
    ckpt = _load(trained_run / "checkpoints" / "best.ckpt")
    name = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and "prior" not in k)
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    bad = _resave(ckpt, tmp_path / "nan.ckpt")
    with pytest.raises(FloatingPointError, match="test/bpd is nan"):
        evaluate(compose_eval(bad, tmp_path / "eval"))
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_data_override_that_changes_the_model_data_is_refused(trained_run, tmp_path):
    """digits are 8x8: cropping to 6 and resizing back to 8 keeps the shape but not the images."""
    best = trained_run / "checkpoints" / "best.ckpt"
    with pytest.raises(ValueError, match=r"data.crop=6 \(trained with None\).*best.ckpt"):
        evaluate(compose_eval(best, tmp_path / "eval", "data.crop=6", "data.image_size=8"))
    metrics = evaluate(compose_eval(best, tmp_path / "eval_ok", "data.eval_batch_size=7"))  # harmless
    assert metrics["test/bpd"] < 5.0
    with pytest.raises(ValueError, match=r"data.n_bits=5 \(trained with 8\)"):
        check_data_overrides({"n_bits": 8}, {"n_bits": 5}, "x.ckpt")


def test_missing_initialized_flag_names_file_version_and_fix(trained_run, tmp_path):
    ckpt = _load(trained_run / "checkpoints" / "best.ckpt")
    gone = [k for k in ckpt["state_dict"] if k.endswith(".initialized")]
    for k in gone:
        del ckpt["state_dict"][k]
    old = _resave(ckpt, tmp_path / "old.ckpt")
    written_by = re.escape(f"(written by glowlab {glowlab.__version__})")
    with pytest.raises(CheckpointError, match=rf"(?s)old.ckpt {written_by}.*initialized.*True"):
        evaluate(compose_eval(old, tmp_path / "eval"))


def test_initialized_false_after_training_is_refused(trained_run, tmp_path):
    """Resuming it would re-initialise ActNorm over its trained values from the first batch."""
    ckpt = _load(trained_run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] > 0
    flag = next(k for k in ckpt["state_dict"] if k.endswith(".initialized"))
    ckpt["state_dict"][flag] = torch.tensor(False)
    bad = _resave(ckpt, tmp_path / "reset.ckpt")
    with pytest.raises(CheckpointError, match=rf"(?s)reset.ckpt.*flagged uninitialised \({flag}\)"):
        load_checkpoint(bad)


def test_checkpoint_without_data_config_names_the_file(trained_run, tmp_path):
    ckpt = _load(trained_run / "checkpoints" / "best.ckpt")
    del ckpt["hyper_parameters"]["data_config"]
    bad = _resave(ckpt, tmp_path / "nodata.ckpt")
    with pytest.raises(CheckpointError, match="nodata.ckpt.*holds no data_config"):
        evaluate(compose_eval(bad, tmp_path / "eval"))


def test_resume_with_another_model_config_names_the_keys(trained_run, train_cfg):
    last = trained_run / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"model.depth: checkpoint 2, this run 1.*model.hidden_channels"):
        train(train_cfg(f"ckpt_path={last}", "model.depth=1", "model.hidden_channels=8"))
