"""Reverse-KL fitting of a flow to an unnormalised target, and the evidence lower bound.

For a target ``p(z) = exp(−U(z)) / Z`` and a variational density ``q``::

    ELBO = E_q[−U(z) − log q(z)]           (a lower bound on log Z, nats)
    KL(q‖p) = E_q[log q(z) + U(z)] + log Z = log Z − ELBO ≥ 0.

Rezende & Mohamed (2015, section 6.1) minimise the annealed free energy
``E_q[log q(z) + β_t U(z)]`` with ``β_t = min(1, 0.01 + t / 10000)`` (``t`` the iteration):
:func:`beta_schedule` and :func:`annealed_free_energy`.

The ELBO is a Monte-Carlo *estimate* from ``n`` draws; :func:`elbo_estimate` reports its standard
error and the KL estimate that follows from a quadrature ``log Z``.

Example:
    >>> import torch
    >>> from glowlab.vi import VariationalFlow, energy, elbo_estimate
    >>> _ = torch.manual_seed(0)
    >>> stats = elbo_estimate(VariationalFlow(2, "planar", 2), energy("u1"), n=2000)
    >>> sorted(stats), stats["kl"] > 0
    (['elbo', 'elbo_se', 'kl', 'log_z', 'n'], True)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from glowlab.core import Density

__all__ = ["annealed_free_energy", "beta_schedule", "elbo_estimate"]


def beta_schedule(step: int, start: float = 0.01, anneal_steps: int = 10_000) -> float:
    """``β_t = min(1, start + t / anneal_steps)``: Rezende & Mohamed's inverse temperature
    (``start=0.01``, ``anneal_steps=10000``); ``anneal_steps=0`` gives ``β = 1`` throughout."""
    if anneal_steps < 0 or not 0 <= start <= 1:
        raise ValueError(f"need anneal_steps >= 0 and 0 <= start <= 1, got {anneal_steps=} {start=}")
    if anneal_steps == 0:
        return 1.0
    return min(1.0, start + step / anneal_steps)


def annealed_free_energy(q: Density, energy: Callable[[torch.Tensor], torch.Tensor], n: int,
                         beta: float = 1.0) -> torch.Tensor:
    """``E_q[log q(z) + β U(z)]`` from ``n`` reparameterised draws (a scalar to minimise, nats).
    At ``β = 1`` it is ``−ELBO`` (an estimate; ``KL(q‖p) − log Z`` in expectation)."""
    z, log_q = q.rsample_and_log_prob(n)
    return (log_q + beta * energy(z)).mean()


@torch.no_grad()
def elbo_estimate(q: Density, energy, n: int = 10_000, batch: int = 10_000, log_z: float | None = None) -> dict:
    """ELBO estimate from ``n`` draws of ``q``, its standard error, ``log Z`` and ``KL = log Z − ELBO``.

    Returns ``{"elbo", "elbo_se", "log_z", "kl", "n"}`` (nats). ``log_z`` defaults to
    ``energy.log_z()`` (quadrature on a grid). The KL is an estimate with the same standard error
    as the ELBO.
    """
    if n < 2:
        raise ValueError(f"need n >= 2 draws to estimate the ELBO and its standard error, got n={n}")
    parts = []
    for start in range(0, n, batch):
        z, log_q = q.rsample_and_log_prob(min(batch, n - start))
        parts.append((-energy(z) - log_q).double())
    values = torch.cat(parts)
    elbo = float(values.mean())
    log_z = energy.log_z() if log_z is None else float(log_z)
    return {"elbo": elbo, "elbo_se": float(values.std() / math.sqrt(n)), "log_z": log_z, "kl": log_z - elbo, "n": n}
