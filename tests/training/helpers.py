"""Callbacks that tests inject into real `train.py` runs (importable as tests.training.helpers)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from glowlab.flows import ActNorm


class DumpActNormPerRank(pl.Callback):
    """After the first training batch, save every ActNorm's (loc, log_scale) of this rank to
    ``dirpath/actnorm_rank{R}.pt``, so a test can compare ranks."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != 1:
            return
        state = {name: torch.stack([m.loc.detach().clone(), m.log_scale.detach().clone()])
                 for name, m in pl_module.model.named_modules() if isinstance(m, ActNorm)}
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.dirpath / f"actnorm_rank{trainer.global_rank}.pt")


class SaveStateAtTrainStart(pl.Callback):
    """At ``on_train_start`` (after a resumed checkpoint is restored) save the global step, the
    module's state dict, the optimiser state and the learning rate to ``path``."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        torch.save({"global_step": trainer.global_step,
                    "state_dict": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
                    "optimizer": opt.state_dict(), "lr": opt.param_groups[0]["lr"]}, self.path)


class RecordBatches(pl.Callback):
    """Append ``[global_step, hash of the batch's images]`` for every training batch to ``path``
    (JSON lines), so a test can compare the data order of two runs."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import hashlib
        import json

        digest = hashlib.sha1(batch[0].cpu().numpy().tobytes()).hexdigest()[:16]
        with self.path.open("a") as f:
            f.write(json.dumps([trainer.global_step, digest]) + "\n")


class SignalAtStep(pl.Callback):
    """Send ``signum`` to this process when the batch of ``global_step == step`` starts."""

    def __init__(self, step: int, signum: int = 15):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import os

        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class CrashAtStep(pl.Callback):
    """Raise RuntimeError("crash") when the batch of ``global_step == step`` starts (a dying run)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


class RecordTestCheckpoint(pl.Callback):
    """Write the checkpoint path ``trainer.test`` loaded (or "" for the weights in memory) to ``path``."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_test_start(self, trainer, pl_module):
        self.path.write_text(str(trainer.ckpt_path or ""))


class DumpStatePerRank(pl.Callback):
    """Save this rank's full model state dict (parameters and buffers: 1x1-conv weights, LU factors,
    permutation buffers, ActNorm) right after initialisation (``on_train_start``, once DDP has
    wrapped the model) and after the first optimiser step, to ``dirpath/{init,step1}_rank{R}.pt``."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def _dump(self, trainer, pl_module, tag: str) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        torch.save(state, self.dirpath / f"{tag}_rank{trainer.global_rank}.pt")

    def on_train_start(self, trainer, pl_module):
        self._dump(trainer, pl_module, "init")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 1:
            self._dump(trainer, pl_module, "step1")
