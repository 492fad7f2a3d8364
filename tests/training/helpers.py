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
