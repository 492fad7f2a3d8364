"""The LightningModule that trains any glowlab flow by maximum likelihood, in bits/dim."""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from torch import nn
from torchmetrics import MeanMetric

from glowlab.likelihood import bits_per_dim, dequantize, to_image
from glowlab.training.ema import EMA
from glowlab.optim import check_optimizer, make_optimizer

__all__ = ["FlowModule"]

log = logging.getLogger(__name__)
NAN_POLICIES = ("skip", "stop")


class FlowModule(pl.LightningModule):
    """Wraps a glowlab model (built from ``model_config``, a Hydra ``_target_`` dict).

    * Loss: the mean bits/dim of the batch (:func:`glowlab.likelihood.bits_per_dim`), on images
      dequantised on the device with uniform noise.
    * Logs ``{train,val,test}/bpd`` and the parts ``prior_bpd`` and ``logdet_bpd``
      (``bpd = prior_bpd + logdet_bpd + n_bits``), plus ``train/grad_norm``.
      Validation and test bpd are exact means over the images of the split, summed across
      processes (the data module's evaluation sampler pads with no duplicates).
    * Evaluation dequantisation noise is a fixed function of each image and ``eval_seed``, so an
      evaluation gives the same number for any batch size or number of processes.
    * Adam/Adamax/AdamW (fused or multi-tensor by default: :mod:`glowlab.optim`) with
      linear warm-up over ``warmup_steps`` optimiser steps.
    * A non-finite loss or gradient skips the optimiser step (parameters untouched) and is logged
      with the step number; ``nan_policy="stop"`` or more than ``max_nan_skips`` in a row raises.
    * ``ema_decay``: Polyak-averaged weights used for validation, test and sampling.

    Args:
        model_config: ``{"_target_": "glowlab.models.Glow", ...}``; a ``compile`` key
            (torch.compile the training forward) is taken out before instantiation.
        n_bits: bits per pixel of the data.
        data_config: the data module's config, stored in checkpoints for ``eval.py`` and ``sample.py``.
    """

    def __init__(self, model_config: dict, n_bits: int, data_config: dict | None = None,
                 optimizer: str = "adamax", optimizer_impl: str = "auto", lr: float = 1e-3, betas=(0.9, 0.999),
                 weight_decay: float = 0.0, warmup_steps: int = 200, ema_decay: float | None = None,
                 nan_policy: str = "skip", max_nan_skips: int = 20, eval_seed: int = 1234):
        super().__init__()
        check_optimizer(optimizer, optimizer_impl)
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"module.nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        self.save_hyperparameters()
        config = dict(model_config)
        compile_model = bool(config.pop("compile", False))
        # called directly rather than through hydra.utils.instantiate, so a bad argument raises
        # the model's own ValueError instead of Hydra's wrapper around it
        self.model = get_class(config.pop("_target_"))(**config)
        # the compiled function shares the model's parameters; kept out of the module tree so the
        # state dict has one copy
        self.__dict__["_train_encode"] = torch.compile(self.model.encode) if compile_model else self.model.encode
        self.n_bits = n_bits
        self.num_dims = math.prod(self.model.image_shape)
        self.ema = EMA(self.model, ema_decay) if ema_decay else None
        # per-image means over whole splits, summed across processes in float64
        self.eval_metrics = nn.ModuleDict({
            f"{stage}_{part}": MeanMetric().set_dtype(torch.float64)
            for stage in ("val", "test") for part in ("bpd", "prior_bpd", "logdet_bpd")
        })
        self._nan_streak = 0
        self._skipped_step = False
        self._eval_stack: ExitStack | None = None

    # -- likelihood ------------------------------------------------------------------------------
    def _cond(self, y: torch.Tensor | None):
        return y if getattr(self.model, "num_classes", 0) else None

    def bpd_parts(self, batch, eval_seed: int | None = None):
        """Per-image ``(bpd, prior_bpd, logdet_bpd)``, each ``[B]`` bits per dimension.

        ``batch`` is ``(x_int [B, C, H, W], y [B])``. Training draws fresh noise; evaluation
        passes ``eval_seed`` for per-image deterministic noise (:func:`glowlab.likelihood.hashed_uniform`).
        """
        x_int, y = batch[0], batch[1]
        x = dequantize(x_int, self.n_bits, seed=eval_seed)
        encode = self._train_encode if self.training else self.model.encode
        _, logdet, log_prior = encode(x, self._cond(y))
        scale = self.num_dims * math.log(2.0)
        bpd = bits_per_dim(log_prior + logdet, self.num_dims, self.n_bits)
        return bpd, -log_prior.detach() / scale, -logdet.detach() / scale

    # -- training --------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        bpd, prior_bpd, logdet_bpd = self.bpd_parts(batch)
        loss = bpd.mean()
        b = bpd.shape[0]
        self.log("train/bpd", loss.detach(), prog_bar=True, batch_size=b)
        self.log("train/prior_bpd", prior_bpd.mean(), batch_size=b)
        self.log("train/logdet_bpd", logdet_bpd.mean(), batch_size=b)
        return loss

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        self.log("train/grad_norm", norm)
        # DDP has already averaged the gradients, so every rank takes the same decision here
        if torch.isfinite(norm):
            self._nan_streak = 0
            self._skipped_step = False
            return
        self._nan_streak += 1
        self._skipped_step = True
        msg = (f"non-finite loss or gradient (grad norm {norm.item()}) at global step "
               f"{self.global_step}, epoch {self.current_epoch}")
        stop = self.hparams.nan_policy == "stop" or self._nan_streak > self.hparams.max_nan_skips
        if stop:
            raise FloatingPointError(
                f"{msg} ({self._nan_streak} in a row; module.nan_policy={self.hparams.nan_policy}, "
                f"max_nan_skips={self.hparams.max_nan_skips}). Lower module.lr, raise "
                f"module.warmup_steps, set trainer.gradient_clip_val, or train in 32-true precision."
            )
        if self.trainer.precision != "16-mixed":  # fp16's loss scaler overflows routinely
            log.warning("%s: skipped this optimiser step, parameters unchanged (%d in a row)", msg, self._nan_streak)
        self.log("train/skipped_steps", float(self._nan_streak))
        for p in self.model.parameters():
            p.grad = None  # the optimiser leaves parameters without a gradient untouched

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None and not self._skipped_step:
            self.ema.update(self.model)

    def configure_optimizers(self):
        h = self.hparams
        # fp16's gradient scaler unscales, clips and skips steps outside the optimiser, which the
        # fused kernels do not allow
        fused_ok = self._trainer is None or self.trainer.precision != "16-mixed"
        opt = make_optimizer(h.optimizer, self.model.parameters(), lr=h.lr, betas=h.betas,
                             weight_decay=h.weight_decay, implementation=h.get("optimizer_impl", "auto"),
                             fused_ok=fused_ok)
        warmup = max(1, int(h.warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation ------------------------------------------------------------------------------
    def _eval_step(self, batch, stage: str):
        parts = dict(zip(("bpd", "prior_bpd", "logdet_bpd"), self.bpd_parts(batch, eval_seed=self.hparams.eval_seed)))
        for name, per_image in parts.items():
            metric = self.eval_metrics[f"{stage}_{name}"]
            metric.update(per_image)
            self.log(f"{stage}/{name}", metric, prog_bar=name == "bpd", on_step=False, on_epoch=True)
        return parts["bpd"]

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, "test")

    def _swap_in_ema(self):
        if self.ema is not None and self._eval_stack is None:
            self._eval_stack = ExitStack()
            self._eval_stack.enter_context(self.ema.swapped_in(self.model))

    def _swap_out_ema(self):
        if self._eval_stack is not None:
            self._eval_stack.close()
            self._eval_stack = None

    on_validation_epoch_start = _swap_in_ema
    on_test_epoch_start = _swap_in_ema
    on_validation_epoch_end = _swap_out_ema
    on_test_epoch_end = _swap_out_ema

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_images(self, n: int, temperature: float = 1.0, cond: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples as images in [0, 1], ``[n, C, H, W]`` (EMA weights when enabled).
        Non-finite samples stay non-finite so callers can count them."""
        was_training = self.model.training
        self.model.eval()
        with ExitStack() as stack:
            if self.ema is not None:
                stack.enter_context(self.ema.swapped_in(self.model))
            x = self.model.sample(n, temperature, cond, generator=generator)
        self.model.train(was_training)
        return to_image(x, self.n_bits)
