"""Callbacks: the latest-state checkpoint, sample grids and training throughput."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from glowlab.core import InversionError

__all__ = ["ImagesPerSecond", "LatestCheckpoint", "LearningRateLogger", "SampleGrid", "save_sample_grid"]

log = logging.getLogger(__name__)


class LatestCheckpoint(ModelCheckpoint):
    """``dirpath/last.ckpt``: the latest training state, for resuming.

    Rewritten (atomically: :class:`glowlab.training.checkpointing.AtomicCheckpointIO`)

    * after every validation, or at every epoch end when there is none;
    * every ``every_n_minutes`` of training and/or every ``every_n_train_steps`` optimiser steps,
      so a crash loses at most that much work (None: off);
    * when training ends, so a run stopped by ``max_steps`` or ``max_time`` between validations
      still leaves its final state;
    * on SIGINT (Ctrl-C) or SIGTERM (``kill``, SLURM pre-emption) when ``save_on_signal``: the
      signal is noted, the step in progress finishes, the state after it is saved, and the run
      stops: SIGINT as a KeyboardInterrupt (Lightning exits with status 1), SIGTERM with exit status
      143. A second Ctrl-C interrupts at once. Under DDP the ranks agree on the step (one
      all-reduce of a flag per step).

    Like Lightning's step- and time-based checkpoints, a checkpoint written after a step holds the
    EMA weights (``module.ema_decay``) before that step's EMA update, which the module makes after
    the callbacks' ``on_train_batch_end``: a resumed run's EMA misses that one update.

    Resuming from a checkpoint written mid-epoch continues with exactly the batches of that epoch
    not yet trained on (:class:`glowlab.data.samplers.ResumableDataLoader`). Lightning's own
    ``save_last=True`` rewrites ``last.ckpt`` only when a monitored checkpoint improves. Put it
    after the ``val/bpd`` checkpoint in the callback list, so the state it saves holds that
    callback's updated best score.
    """

    def __init__(self, dirpath: str, filename: str = "last", every_n_minutes: float | None = None,
                 every_n_train_steps: int | None = None, save_on_signal: bool = True):
        if every_n_minutes is not None and not every_n_minutes >= 0:
            raise ValueError(f"every_n_minutes must be >= 0 or None, got {every_n_minutes!r}")
        if every_n_train_steps is not None and (isinstance(every_n_train_steps, bool) or every_n_train_steps < 1):
            raise ValueError(f"every_n_train_steps must be a positive integer or None, got {every_n_train_steps!r}")
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1,
                         auto_insert_metric_name=False, enable_version_counter=False)
        # Lightning's own step/time triggers exclude saving at every validation, so these are ours
        self.every_n_seconds = None if every_n_minutes is None else 60.0 * every_n_minutes
        self.every_n_steps = every_n_train_steps
        self._last_saved_at: float | None = None
        self.save_on_signal = bool(save_on_signal)
        self._signal: int | None = None
        self._previous_handlers: dict[int, object] = {}

    # -- signals ---------------------------------------------------------------------------------
    def _note_signal(self, signum: int, frame) -> None:
        if self._signal is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._signal = signum
        log.warning("received %s: saving last.ckpt after the current step, then stopping (Ctrl-C again to "
                    "stop at once)", signal.Signals(signum).name)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._last_saved_at = time.monotonic()

    def _periodic_save_due(self, trainer: pl.Trainer) -> bool:
        due = bool(self.every_n_steps) and trainer.global_step % self.every_n_steps == 0
        if self.every_n_seconds is not None:
            now = time.monotonic()
            due = due or (self._last_saved_at is not None and now - self._last_saved_at >= self.every_n_seconds)
            if trainer.world_size > 1:  # rank 0's clock decides, so every rank saves together
                due = trainer.strategy.broadcast(due)
        return due

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._signal = None
        self._last_saved_at = time.monotonic()
        if self.save_on_signal and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous_handlers[signum] = signal.signal(signum, self._note_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._periodic_save_due(trainer) and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        if not self.save_on_signal:
            return
        stop = self._signal is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        signum = self._signal or signal.SIGTERM  # another rank received it
        if self._last_global_step_saved != trainer.global_step:
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        rank_zero_info(f"saved {self.best_model_path} at step {trainer.global_step} after "
                       f"{signal.Signals(signum).name}; resume with ckpt_path={self.best_model_path}")
        self._restore_handlers()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore_handlers()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # skipped when this step is saved already
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


class LearningRateLogger(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor``, except that a run without loggers (``logger=null``,
    ``~logger``, ``debug=default``) trains on with a note instead of failing."""

    _off = False

    def on_train_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        self._off = not trainer.loggers
        if self._off:
            rank_zero_info("no logger configured: the learning rate is not logged")
            return
        super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not self._off:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not self._off:
            super().on_train_epoch_start(trainer, *args, **kwargs)


def save_sample_grid(images: torch.Tensor, path: str | Path, nrow: int, min_width: int = 256) -> int:
    """Write ``images`` ``[N, C, H, W]`` in [0, 1] as a PNG grid with ``nrow`` images per row
    (:func:`glowlab.analysis.grids.save_grid`): enlarged by nearest neighbour to at least
    ``min_width`` pixels, the raw grid kept as ``<stem>_raw.png``. Non-finite pixels are counted,
    reported and written as 0. Returns the number of images that had any non-finite pixel."""
    from glowlab.analysis.grids import save_grid

    return save_grid(images, path, nrow=nrow, min_width=min_width)["non_finite"]


class SampleGrid(pl.Callback):
    """Every ``every_n_epochs`` epochs and at the end of training, sample one row of
    ``num_per_temperature`` images per temperature, save ``dirpath/epoch_XXXX.png`` (and
    ``final.png``) and send it to the wandb / TensorBoard loggers. Runs on global rank 0 only.

    Grids narrower than ``min_width`` pixels (8x8 digits: 73 px) are enlarged by an integer
    factor, nearest neighbour, and the raw grid is kept beside as ``<name>_raw.png``. A grid whose
    sampling raises :class:`~glowlab.core.InversionError` (a numerical inverse that does not converge
    on some sample) is skipped with a warning: training and its test still finish."""

    def __init__(self, dirpath: str, temperatures=(0.5, 0.7, 1.0), num_per_temperature: int = 8,
                 every_n_epochs: int = 1, seed: int = 0, min_width: int = 256):
        self.dirpath = Path(dirpath)
        self.temperatures = [float(t) for t in temperatures]
        self.n = int(num_per_temperature)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.seed = seed
        self.min_width = int(min_width)
        self.last_path: Path | None = None

    def _grid(self, trainer: pl.Trainer, module, name: str) -> None:
        if not trainer.is_global_zero:
            return
        g = torch.Generator(device=module.device).manual_seed(self.seed)
        cond = None
        if module.model.num_classes:
            cond = torch.arange(self.n, device=module.device) % module.model.num_classes
        try:
            rows = [module.sample_images(self.n, t, cond, generator=g) for t in self.temperatures]
        except InversionError as err:  # a sample the numerical inverse cannot reach must not end the run
            log.warning("sample grid %s skipped: %s", name, err)
            return
        path = self.dirpath / f"{name}.png"
        save_sample_grid(torch.cat(rows).cpu(), path, nrow=self.n, min_width=self.min_width)
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
