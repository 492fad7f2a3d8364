"""Reverse KL to an unnormalised target ``p(z) = exp(-U(z)) / Z``: variational inference, no data.

With ``n`` reparameterised draws ``z ~ q`` of the model (``rsample_and_log_prob``)::

    F_β(q) = E_q[log q(z) + β U(z)]          (the annealed free energy, nats; minimised)
    ELBO   = E_q[-U(z) - log q(z)]           (F_1 = -ELBO; a lower bound on log Z)
    KL(q‖p) = log Z - ELBO >= 0

β goes linearly from ``beta0`` to 1 over ``anneal_steps`` optimiser steps (Rezende & Mohamed 2015,
section 6.1: ``β_t = min(1, 0.01 + t / 10000)``). Every logged value is a Monte-Carlo **estimate**
from the step's draws: ``free_energy``, ``elbo_estimate`` and, when the target knows its
normaliser (``target.log_z()``, e.g. :func:`glowlab.vi.energy`), ``kl_estimate``.

Example:
    >>> import torch
    >>> from glowlab.vi import VariationalFlow
    >>> objective = ReverseKL(target=lambda z: 0.5 * z.square().sum(1), samples=64, anneal_steps=0)
    >>> loss, metrics = objective.loss(VariationalFlow(2, "planar", 2), None)
    >>> sorted(metrics)
    ['beta', 'elbo_estimate', 'free_energy']

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from glowlab.objectives.base import Objective
from glowlab.vi.evaluate import beta_schedule

__all__ = ["ReverseKL", "build_target"]


def build_target(target) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable energy ``U: z [B, ...] -> [B]`` from a callable or a Hydra ``{_target_: ...}`` config."""
    if isinstance(target, Mapping) or type(target).__name__ == "DictConfig":
        from hydra.utils import instantiate

        target = instantiate(target)
    if not callable(target):
        raise ValueError(f"objective.target must be a callable energy U(z) or a config with _target_ "
                         f"(e.g. {{_target_: glowlab.vi.energy, name: u1}}), got {target!r}")
    return target


class ReverseKL(Objective):
    """Minimise the annealed free energy ``E_q[log q + β U]`` of the model ``q`` (see the module docstring).

    Args:
        target: the energy ``U`` (callable ``z [B, D] -> [B]`` nats) or its ``_target_`` config. A
            target that is an ``nn.Module`` moves with the objective and has its parameters frozen.
        samples: draws of ``q`` per step.
        beta0: β at step 0 (0.01 in the paper).
        anneal_steps: steps over which β reaches 1 (10000 in the paper; 0: β = 1 throughout).
        eval_samples: draws per evaluation batch (validation and test).
        steps_per_epoch: optimiser steps per epoch of the run's step-only data module.
    """

    needs_data = False
    monitor = "val/free_energy"

    def __init__(self, target, samples: int = 256, beta0: float = 0.01, anneal_steps: int = 10_000,
                 eval_samples: int = 10_000, steps_per_epoch: int = 100):
        super().__init__()
        for name, value in (("samples", samples), ("eval_samples", eval_samples), ("steps_per_epoch", steps_per_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"objective.{name} must be a positive integer, got {value!r}")
        beta_schedule(0, beta0, anneal_steps)  # validates both
        self.target = build_target(target)
        if isinstance(self.target, torch.nn.Module):  # the target is fixed: only q trains
            self.target.requires_grad_(False)
        self.samples, self.beta0, self.anneal_steps = samples, float(beta0), int(anneal_steps)
        self.eval_samples, self.steps_per_epoch = eval_samples, steps_per_epoch
        self._log_z: float | None = None

    def log_z(self) -> float | None:
        """``log Z`` of the target when it can compute it (quadrature), cached; else None."""
        if self._log_z is None and hasattr(self.target, "log_z"):
            self._log_z = float(self.target.log_z())
        return self._log_z

    def loss(self, model, batch, step: int = 0, eval_seed: int | None = None, encode=None):
        training = eval_seed is None
        n = self.samples if training else self.eval_samples
        z, log_q = model.rsample_and_log_prob(n)
        energy = self.target(z)
        if energy.shape != log_q.shape:
            raise ValueError(f"the target energy must return one value per sample, shape {tuple(log_q.shape)}, "
                             f"got {tuple(energy.shape)}")
        beta = beta_schedule(step, self.beta0, self.anneal_steps) if training else 1.0
        loss = (log_q + beta * energy).mean()
        free_energy = (log_q + energy).detach()  # per draw; its mean is -ELBO
        metrics = {"free_energy": free_energy, "elbo_estimate": -free_energy}
        if training:
            metrics["beta"] = torch.tensor(beta, device=loss.device)
        elif self.log_z() is not None:
            metrics["kl_estimate"] = self.log_z() + free_energy
        return loss, metrics

    def datamodule(self):
        from glowlab.training.steps_data import StepsDataModule

        return StepsDataModule(steps_per_epoch=self.steps_per_epoch)
