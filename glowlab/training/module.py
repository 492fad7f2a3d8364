"""The LightningModule that trains any glowlab density with a chosen objective."""

from __future__ import annotations

import inspect
import logging
import math
from contextlib import ExitStack

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from glowlab.likelihood import to_image
from glowlab.models.build import build_model
from glowlab.models.compat import explicit_model_config, legacy_model_config
from glowlab.objectives import MaximumLikelihood, Objective
from glowlab.optim import check_optimizer, make_optimizer
from glowlab.training.ema import EMA

__all__ = ["FlowModule", "build_objective", "exact_mean"]

log = logging.getLogger(__name__)
NAN_POLICIES = ("skip", "stop")


def build_objective(config) -> Objective:
    """An :class:`~glowlab.objectives.Objective` from an instance, a ``{_target_: ...}`` config, or
    None (maximum likelihood)."""
    if config is None:
        return MaximumLikelihood()
    if isinstance(config, Objective):
        return config
    config = dict(config)
    if "_target_" not in config:
        raise ValueError(f"module objective needs a _target_ (e.g. glowlab.objectives.MaximumLikelihood), got {config}")
    from hydra.utils import instantiate

    objective = instantiate(config, _convert_="partial")
    if not isinstance(objective, Objective):
        raise ValueError(f"objective {config['_target_']} is not a glowlab.objectives.Objective")
    return objective



def exact_mean() -> MeanMetric:
    """A per-sample mean over a whole evaluation split, summed across processes in float64.

    A NaN or inf sample makes the mean NaN or inf (torchmetrics' default would drop it with a
    warning and report a finite, wrong mean), so a non-finite evaluation is never silently hidden.
    """
    return MeanMetric(nan_strategy="disable").set_dtype(torch.float64)

class FlowModule(pl.LightningModule):
    """Trains a glowlab model (built from ``model_config``, a Hydra ``_target_`` dict) with an
    objective (``objective``, a ``_target_`` dict; default maximum likelihood in bits/dim).

    * Loss and metrics come from the objective (:mod:`glowlab.objectives`); each metric ``m`` is
      logged as ``train/m``, ``val/m`` and ``test/m``. Maximum likelihood logs ``bpd`` and its parts
      ``prior_bpd`` and ``logdet_bpd`` (``bpd = prior_bpd + logdet_bpd + n_bits``) and, for a
      class-conditional model, the classifier's ``accuracy``. Validation and test values are exact
      means over the samples of the split, summed across processes (the data module's evaluation
      sampler pads with no duplicates).
    * Evaluation dequantisation noise is a fixed function of each image and ``eval_seed``, so an
      evaluation gives the same number for any batch size or number of processes.
    * Models with continuous-flow hooks (``regularization_loss()``, ``nfe``, ``reset_nfe()``: FFJORD)
      get the RNODE terms added to the training loss (``train/reg_loss``) and their NFE logged
      (``{train,val}/nfe_forward``, ``train/nfe_backward`` of the previous step).
    * Adam/Adamax/AdamW (fused or multi-tensor by default: :mod:`glowlab.optim`) with
      linear warm-up over ``warmup_steps`` optimiser steps.
    * A non-finite loss or gradient skips the optimiser step (parameters untouched) and is logged
      with the step number; ``nan_policy="stop"`` or more than ``max_nan_skips`` in a row raises.
    * ``ema_decay``: Polyak-averaged weights used for validation, test and sampling.

    Args:
        model_config: ``{"_target_": "glowlab.models.Glow", ...}``; a ``compile`` key
            (torch.compile the training forward) is taken out before instantiation.
        n_bits: bits per pixel of quantised image data; None for data that is not (vectors, no data).
        data_config: the data module's config, stored in checkpoints for ``eval.py`` and ``sample.py``.
        objective: ``{"_target_": "glowlab.objectives.ReverseKL", ...}`` or None (maximum likelihood).
    """

    def __init__(self, model_config: dict, n_bits: int | None = None, data_config: dict | None = None,
                 optimizer: str = "adamax", optimizer_impl: str = "auto", lr: float = 1e-3, betas=(0.9, 0.999),
                 weight_decay: float = 0.0, warmup_steps: int = 200, ema_decay: float | None = None,
                 nan_policy: str = "skip", max_nan_skips: int = 20, eval_seed: int = 1234,
                 objective: dict | None = None):
        super().__init__()
        check_optimizer(optimizer, optimizer_impl)
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"module.nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        # keys added since glowlab 0.1 are stored explicitly, so this run's checkpoints are read as current
        model_config = explicit_model_config(model_config)
        self.save_hyperparameters(ignore=[] if not isinstance(objective, Objective) else ["objective"])
        self.n_bits = n_bits
        self.objective = build_objective(objective)
        self._build_model(model_config)
        self.ema = EMA(self.model, ema_decay) if ema_decay else None
        # per-sample means over whole splits, summed across processes in float64; one per metric,
        # created at the first evaluation batch that reports it
        self.eval_metrics = nn.ModuleDict()
        self._nan_streak = 0
        self._skipped_step = False
        self._eval_stack: ExitStack | None = None

    def _build_model(self, model_config: dict) -> None:
        config = dict(model_config)
        compile_model = bool(config.pop("compile", False))
        self.model = build_model(config)
        encode = getattr(self.model, "encode", None)
        if compile_model and encode is None:
            raise ValueError(f"model.compile=true compiles the model's encode, which {type(self.model).__name__} "
                             f"does not have; set model.compile=false")
        # the compiled function shares the model's parameters; kept out of the module tree so the
        # state dict has one copy
        self.__dict__["_train_encode"] = torch.compile(encode) if compile_model else None
        self.objective.setup(self.model, self.n_bits)
        event_shape = getattr(self.model, "event_shape", None) or getattr(self.model, "image_shape", ())
        self.num_dims = math.prod(event_shape)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints of earlier versions (glowlab 0.1): rebuild the model with the arguments that
        reproduce the density they hold (:func:`glowlab.models.compat.legacy_model_config`: e.g. a
        class-conditional model with ``condition_couplings=False``, a RealNVP with
        ``translation_bound=None``) before the weights are loaded."""
        current = dict(self.hparams.model_config)
        stored = (checkpoint.get("hyper_parameters") or {}).get("model_config") or current
        legacy, notes = legacy_model_config(stored, checkpoint.get("state_dict", {}), prefix="model.")
        changed = {k: v for k, v in legacy.items() if k not in stored or stored[k] != v}
        if not changed or all(k in current and current[k] == v for k, v in changed.items()):
            return
        for note in notes:
            log.warning(note)
        self.hparams.model_config = {**current, **changed}
        self._build_model(self.hparams.model_config)
        if self.ema is not None:
            self.ema = EMA(self.model, self.ema.decay)

    # -- objective -------------------------------------------------------------------------------
    def bpd_parts(self, batch, eval_seed: int | None = None):
        """Per-image ``(bpd, prior_bpd, logdet_bpd)``, each ``[B]`` bits per dimension (the parts
        are None for models without ``encode``), for quantised image data.

        ``batch`` is ``(x_int [B, C, H, W], y [B])``. Training draws fresh noise; evaluation
        passes ``eval_seed`` for per-image deterministic noise (:func:`glowlab.likelihood.hashed_uniform`).
        """
        if self.n_bits is None:
            raise ValueError("bits/dim need quantised image data: this module was built with n_bits=None")
        objective = self.objective if isinstance(self.objective, MaximumLikelihood) else MaximumLikelihood()
        objective.n_bits = self.n_bits
        parts, _ = objective.bpd_parts(self.model, batch, eval_seed, self._encode())
        return parts["bpd"], parts.get("prior_bpd"), parts.get("logdet_bpd")

    def _encode(self):
        return self._train_encode if self.training and self._train_encode is not None else None

    def trained_parameters(self) -> list[nn.Parameter]:
        """The model's parameters and the objective's (e.g. a learned dequantiser's), except frozen
        ones (e.g. a reverse-KL target's)."""
        return [p for p in (*self.model.parameters(), *self.objective.parameters()) if p.requires_grad]

    def _cnf_hooks(self) -> bool:
        return callable(getattr(self.model, "regularization_loss", None)) and hasattr(self.model, "nfe")

    # -- training --------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        if self._cnf_hooks():
            nfe = self.model.nfe
            if self.global_step:
                self.log("train/nfe_backward", float(nfe["backward"]))
            self.model.reset_nfe()
        loss, metrics = self.objective.loss(self.model, batch, step=self.global_step, encode=self._encode())
        if self._cnf_hooks():
            self.log("train/nfe_forward", float(self.model.nfe["forward"]))
            reg = self.model.regularization_loss()
            self.log("train/reg_loss", reg.detach())
            loss = loss + reg
        first = next(iter(metrics.values()), loss)
        b = first.shape[0] if first.dim() else 1
        self.log("train/loss", loss.detach(), batch_size=b)
        for i, (name, value) in enumerate(metrics.items()):
            self.log(f"train/{name}", value.float().mean(), prog_bar=i == 0, batch_size=b)
        return loss

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad for p in self.trained_parameters() if p.grad is not None]
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
        for p in self.trained_parameters():
            p.grad = None  # the optimiser leaves parameters without a gradient untouched

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None and not self._skipped_step:
            self.ema.update(self.model)

    def configure_optimizers(self):
        h = self.hparams
        # fp16's gradient scaler unscales, clips and skips steps outside the optimiser, which the
        # fused kernels do not allow
        fused_ok = self._trainer is None or self.trainer.precision != "16-mixed"
        opt = make_optimizer(h.optimizer, self.trained_parameters(), lr=h.lr, betas=h.betas,
                             weight_decay=h.weight_decay, implementation=h.get("optimizer_impl", "auto"),
                             fused_ok=fused_ok)
        warmup = max(1, int(h.warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation ------------------------------------------------------------------------------
    def _eval_step(self, batch, stage: str):
        with ExitStack() as stack:
            if self._cnf_hooks():
                # a CNF's exact trace differentiates the dynamics, also in evaluation: leave Lightning's
                # inference mode (the batch, made in it, is cloned into an ordinary tensor)
                stack.enter_context(torch.inference_mode(False))
                stack.enter_context(torch.enable_grad())
                batch = [t.clone() if isinstance(t, torch.Tensor) else t for t in batch]
                self.model.reset_nfe()
            loss, metrics = self.objective.loss(self.model, batch, step=self.global_step,
                                                eval_seed=self.hparams.eval_seed)
            metrics = {k: v.detach() for k, v in metrics.items()}
        if self._cnf_hooks():
            metrics = {**metrics, "nfe_forward": torch.tensor(float(self.model.nfe["forward"]), device=loss.device)}
        for name, value in metrics.items():
            key = f"{stage}_{name}"
            if key not in self.eval_metrics:
                self.eval_metrics[key] = exact_mean().to(value.device)
            metric = self.eval_metrics[key]
            metric.update(value.double())
            self.log(f"{stage}/{name}", metric, prog_bar=name in ("bpd", "accuracy"), on_step=False, on_epoch=True,
                     metric_attribute=f"eval_metrics.{key}")
        return loss

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
                      generator: torch.Generator | None = None, *, context: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` samples as images in [0, 1], ``[n, C, H, W]`` (EMA weights when enabled), for a model
        of quantised images. ``context`` (``cond`` is its old name): one row per sample.
        Non-finite samples stay non-finite so callers can count them."""
        if self.n_bits is None or getattr(self.model, "image_shape", None) is None:
            raise ValueError(f"sample_images needs an image model trained on quantised images; this module has "
                             f"n_bits={self.n_bits} and a {type(self.model).__name__}: use model.sample(n)")
        context = context if context is not None else cond
        was_training = self.model.training
        self.model.eval()
        with ExitStack() as stack:
            if self.ema is not None:
                stack.enter_context(self.ema.swapped_in(self.model))
            if generator is None or "generator" in inspect.signature(self.model.sample).parameters:
                kwargs = {"generator": generator} if generator is not None else {}
                x = self.model.sample(n, context=context, temperature=temperature, **kwargs)
            else:  # a density whose sample takes no generator: seed the global RNG from it, locally
                devices = [generator.device] if generator.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(generator.initial_seed())
                    x = self.model.sample(n, context=context, temperature=temperature)
        self.model.train(was_training)
        return to_image(x, self.n_bits)
