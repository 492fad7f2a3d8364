"""Lightning callbacks for variational-inference runs (imported by configs only: the rest of
:mod:`glowlab.vi` does not need Lightning).

* :class:`EnergyFitReport`: at the end of testing a reverse-KL run, the ELBO from ``samples``
  draws (an estimate, with its standard error), ``log Z`` by quadrature and ``KL = log Z − ELBO``,
  logged as ``elbo``, ``elbo_se``, ``log_z``, ``kl`` (so they reach ``metrics.json``), and the
  target-vs-samples PNG (Rezende & Mohamed 2015, Figure 3).
* :class:`IWAEReport`: at the end of testing a VAE, over the test split: ``test/elbo`` (mean
  one-sample ELBO, a bound, nats per image), ``test/nll_iwae`` (minus the mean importance-weighted
  estimate of ``log p(x)`` with ``k`` draws, nats per image) and ``test/nll_iwae_se`` (its Monte-Carlo
  standard error over the draws, not over the choice of test images).

Both run on one process (rank 0); they are reports, not part of training. Configs add them, e.g.
``conf/experiment/vi_u1.yaml`` (``callbacks.vi_report``) and ``vae_digits.yaml`` (``callbacks.iwae``).

Example:
    >>> report = IWAEReport(k=1000, chunk=100)
    >>> report.k, report.chunk
    (1000, 100)
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch

from glowlab.vi.evaluate import elbo_estimate
from glowlab.vi.plot import plot_target_and_samples

__all__ = ["EnergyFitReport", "IWAEReport"]


class EnergyFitReport(pl.Callback):
    """ELBO, ``log Z``, KL and the PNG of a reverse-KL fit, at the end of testing.

    The target is the run's objective's (``pl_module.objective.target``, e.g.
    :func:`glowlab.vi.energy`); it must provide ``log_z()`` and ``plot_box``.

    Args:
        dirpath: where the PNG goes.
        samples: draws for the ELBO estimate and the histogram (at least 10,000).
        filename: the PNG's name.
    """

    def __init__(self, dirpath: str, samples: int = 100_000, filename: str = "vi_fit.png"):
        super().__init__()
        if samples < 10_000:
            raise ValueError(f"EnergyFitReport needs samples >= 10000 for a usable ELBO estimate, got {samples}")
        self.dirpath, self.samples, self.filename = Path(dirpath), samples, filename

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = getattr(getattr(pl_module, "objective", None), "target", None)
        if target is None or not hasattr(target, "log_z"):
            raise ValueError("EnergyFitReport needs a reverse-KL run whose target has log_z() (glowlab.vi.energy)")
        model = pl_module.model
        stats = elbo_estimate(model, target, n=self.samples)
        for name in ("elbo", "elbo_se", "log_z", "kl"):
            pl_module.log(name, float(stats[name]), rank_zero_only=True)
        if trainer.is_global_zero:
            samples = model.sample(self.samples)
            title = f"KL = {stats['kl']:.3f} ± {stats['elbo_se']:.3f} nats"
            plot_target_and_samples(target, samples, self.dirpath / self.filename, title=title)


class IWAEReport(pl.Callback):
    """ELBO and importance-weighted ``−log p(x)`` of a VAE over the test split (see the module docstring).

    Args:
        k: importance samples per image (1000 in the literature's test protocol).
        chunk: draws per image evaluated at once (memory).
        limit_batches: evaluate only this many test batches (None: all).
    """

    def __init__(self, k: int = 1000, chunk: int = 100, limit_batches: int | None = None):
        super().__init__()
        if k < 2:
            raise ValueError(f"IWAEReport needs k >= 2 importance samples, got {k}")
        self.k, self.chunk, self.limit_batches = k, chunk, limit_batches

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = pl_module.model
        if not hasattr(model, "iwae"):
            raise ValueError(f"IWAEReport needs a model with iwae() (glowlab.models.vae.FlowVAE), got "
                             f"{type(model).__name__}")
        loader = trainer.datamodule.test_dataloader()
        elbo, log_px, var = [], [], []
        for i, batch in enumerate(loader):
            if self.limit_batches is not None and i >= self.limit_batches:
                break
            x = (batch[0] if isinstance(batch, (tuple, list)) else batch).to(pl_module.device)
            elbo.append(model.elbo(x).double())
            est = model.iwae(x, k=self.k, chunk=self.chunk)
            log_px.append(est.log_px)
            var.append(est.stderr.square())
        elbo, log_px, var = torch.cat(elbo), torch.cat(log_px), torch.cat(var)
        n = log_px.numel()
        pl_module.log("test/elbo", float(elbo.mean()), rank_zero_only=True)
        pl_module.log("test/nll_iwae", float(-log_px.mean()), rank_zero_only=True)
        pl_module.log("test/nll_iwae_se", float(var.sum().sqrt() / n), rank_zero_only=True)
        pl_module.log("test/iwae_k", float(self.k), rank_zero_only=True)
        pl_module.log("test/iwae_images", float(n), rank_zero_only=True)
        if not math.isfinite(float(log_px.mean())):
            raise FloatingPointError("the IWAE estimate is not finite; check the model's posterior and decoder")
