"""Callbacks: the latest-state checkpoint, sample grids and training throughput."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import save_image

__all__ = ["LatestCheckpoint", "SampleGrid", "ImagesPerSecond", "save_sample_grid"]

log = logging.getLogger(__name__)


class LatestCheckpoint(ModelCheckpoint):
    """``dirpath/last.ckpt``: the latest training state, for resuming.

    Rewritten (atomically, like every Lightning checkpoint) after every validation, or at every
    epoch end when there is none, and once more when training ends, so a run stopped by
    ``max_steps`` or ``max_time`` between validations still leaves its final state. Lightning's own
    ``save_last=True`` rewrites ``last.ckpt`` only when a monitored checkpoint improves. Put it
    after the ``val/bpd`` checkpoint in the callback list, so the state it saves holds that
    callback's updated best score.
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1,
                         auto_insert_metric_name=False, enable_version_counter=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # skipped when this step is saved already
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


def save_sample_grid(images: torch.Tensor, path: str | Path, nrow: int) -> int:
    """Write ``images`` ``[N, C, H, W]`` in [0, 1] as a PNG grid with ``nrow`` images per row.

    Non-finite pixels are counted, reported and written as 0. Returns the number of images that
    had any non-finite pixel.
    """
    bad = (~torch.isfinite(images)).flatten(1).any(1)
    n_bad = int(bad.sum())
    if n_bad:
        log.warning("%d of %d samples contain NaN or inf; written as black tiles in %s", n_bad, len(images), path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.nan_to_num(images, nan=0.0, posinf=0.0, neginf=0.0).clamp(0, 1), path, nrow=nrow, padding=1)
    return n_bad


class SampleGrid(pl.Callback):
    """Every ``every_n_epochs`` epochs and at the end of training, sample one row of
    ``num_per_temperature`` images per temperature, save ``dirpath/epoch_XXXX.png`` (and
    ``final.png``) and send it to the wandb / TensorBoard loggers. Runs on global rank 0 only."""

    def __init__(self, dirpath: str, temperatures=(0.5, 0.7, 1.0), num_per_temperature: int = 8,
                 every_n_epochs: int = 1, seed: int = 0):
        self.dirpath = Path(dirpath)
        self.temperatures = [float(t) for t in temperatures]
        self.n = int(num_per_temperature)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.seed = seed
        self.last_path: Path | None = None

    def _grid(self, trainer: pl.Trainer, module, name: str) -> None:
        if not trainer.is_global_zero:
            return
        g = torch.Generator(device=module.device).manual_seed(self.seed)
        cond = None
        if getattr(module.model, "num_classes", 0):
            cond = torch.arange(self.n, device=module.device) % module.model.num_classes
        rows = [module.sample_images(self.n, t, cond, generator=g) for t in self.temperatures]
        path = self.dirpath / f"{name}.png"
        save_sample_grid(torch.cat(rows).cpu(), path, nrow=self.n)
        self.last_path = path
        caption = "rows: temperature " + ", ".join(f"{t:g}" for t in self.temperatures)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="samples", images=[str(path)], caption=[caption], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                from torchvision.io import read_image
                logger.experiment.add_image("samples", read_image(str(path)), trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module):
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._grid(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}")

    def on_train_end(self, trainer, pl_module):
        self._grid(trainer, pl_module, "final")


class ImagesPerSecond(pl.Callback):
    """Logs ``train/images_per_sec``: images (over all processes) per second of wall time of the
    training step, including the data loading wait since the previous step."""

    def __init__(self):
        self._t0: float | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if self._t0 is not None:
            n = batch[0].shape[0] * trainer.world_size
            pl_module.log("train/images_per_sec", n / max(now - self._t0, 1e-9), prog_bar=False)
        self._t0 = now
