"""The four 2-D energy targets of Rezende & Mohamed (2015), Table 1: ``p(z) ∝ exp(−U(z))``.

With ``z = (z₁, z₂)``, ``σ(x) = 1 / (1 + e^{−x})`` and::

    w₁(z) = sin(2π z₁ / 4)
    w₂(z) = 3 exp(−½ ((z₁ − 1) / 0.6)²)
    w₃(z) = 3 σ((z₁ − 1) / 0.3)

the energies are::

    U₁(z) = ½ ((‖z‖ − 2) / 0.4)² − ln( exp(−½ ((z₁ − 2) / 0.6)²) + exp(−½ ((z₁ + 2) / 0.6)²) )
    U₂(z) = ½ ((z₂ − w₁(z)) / 0.4)²
    U₃(z) = −ln( exp(−½ ((z₂ − w₁(z)) / 0.35)²) + exp(−½ ((z₂ − w₁(z) + w₂(z)) / 0.35)²) )
    U₄(z) = −ln( exp(−½ ((z₂ − w₁(z)) / 0.4)²)  + exp(−½ ((z₂ − w₁(z) + w₃(z)) / 0.35)²) )

(the ``−ln(e^a + e^b)`` terms are computed as ``−logsumexp``, exactly and without underflow).

Confinement:
    ``exp(−U₁)`` is integrable on the plane. ``U₂``, ``U₃`` and ``U₄`` decay in ``z₂`` but do
    not depend on ``z₁`` far from the origin (``w₁`` is periodic and ``w₂ → 0``, ``w₃ → 3``), so
    ``exp(−U)`` has infinite mass: they are improper. glowlab confines them to the paper's
    plotting box ``|z₁| ≤ 4`` with a soft wall that is exactly zero inside it::

        U_confined(z) = U(z) + ½ (max(|z₁| − 4, 0) / 0.1)²

    so inside the box the target is the paper's, and outside it falls off as a half-Gaussian of
    standard deviation 0.1 (a hard cut would make the reverse KL of any Gaussian-based flow
    infinite). ``energy(name, confine=False)`` returns the paper's formula unchanged.

Normaliser:
    :meth:`Energy.log_z` integrates ``exp(−U)`` by the trapezoidal rule on a grid (float64) that
    holds all but a negligible fraction of the mass; with it, ``KL(q‖p) = log Z − ELBO`` where
    ``ELBO = E_q[−U(z) − log q(z)]``.

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
    Table 1 and Figure 3.

Example:
    >>> import torch
    >>> from glowlab.vi import energy
    >>> u1 = energy("u1")
    >>> round(float(u1(torch.tensor([[0.0, 0.0]]))[0]), 4)
    17.3624
    >>> round(u1.log_z(), 3)
    1.878
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["BOX", "ENERGY_NAMES", "WALL_SCALE", "Energy", "energy"]

#: The paper's plotting box: ``[-4, 4]²``; U2–U4 are confined to ``|z₁| ≤ BOX``.
BOX = 4.0
#: Standard deviation (in units of z) of the soft wall outside the box.
WALL_SCALE = 0.1


def _w1(z1):
    return torch.sin(2 * math.pi * z1 / 4)


def _w2(z1):
    return 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)


def _w3(z1):
    return 3 * torch.sigmoid((z1 - 1) / 0.3)


def _neg_log_sum_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``−ln(eᵃ + eᵇ)``."""
    return -torch.logaddexp(a, b)


def _u1(z1, z2):
    r = torch.sqrt(z1 ** 2 + z2 ** 2)
    return 0.5 * ((r - 2) / 0.4) ** 2 + _neg_log_sum_exp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)


def _u2(z1, z2):
    return 0.5 * ((z2 - _w1(z1)) / 0.4) ** 2


def _u3(z1, z2):
    d = z2 - _w1(z1)
    return _neg_log_sum_exp(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + _w2(z1)) / 0.35) ** 2)


def _u4(z1, z2):
    d = z2 - _w1(z1)
    return _neg_log_sum_exp(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + _w3(z1)) / 0.35) ** 2)


def _wall(z1):
    return 0.5 * (F.relu(z1.abs() - BOX) / WALL_SCALE) ** 2


@dataclass(frozen=True)
class Energy:
    """A 2-D energy ``U: z [B, 2] -> [B]`` (nats); the target density is ``exp(−U) / Z``.

    Attributes:
        name: ``"u1"`` .. ``"u4"``.
        confined: whether the soft wall ``|z₁| ≤ 4`` is added (see the module docstring).
        plot_box: ``((z₁ min, z₁ max), (z₂ min, z₂ max))`` of the paper's Figure 3.
        quad_box: the box :meth:`log_z` integrates over.
    """

    name: str
    fn: Callable = field(repr=False)
    confined: bool
    quad_box: tuple[tuple[float, float], tuple[float, float]]
    plot_box: tuple[tuple[float, float], tuple[float, float]] = ((-BOX, BOX), (-BOX, BOX))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != 2 or not z.is_floating_point():
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"energy {self.name!r} takes points z of shape [B, 2] (floating), got {shape}")
        z1, z2 = z[:, 0], z[:, 1]
        u = self.fn(z1, z2)
        return u + _wall(z1) if self.confined else u

    def log_prob_unnormalised(self, z: torch.Tensor) -> torch.Tensor:
        """``−U(z)``, ``[B]`` nats (the target's log-density up to ``log Z``)."""
        return -self(z)

    def log_z(self, resolution: int = 100) -> float:
        """``log ∫ exp(−U(z)) dz`` by the trapezoidal rule on ``quad_box`` with ``resolution``
        points per unit length, in float64 (nats). Raises for an improper (unconfined) U2–U4."""
        if self.name != "u1" and not self.confined:
            raise ValueError(f"energy {self.name!r} without confinement has infinite mass; use energy({self.name!r})")
        (a1, b1), (a2, b2) = self.quad_box
        g1 = torch.linspace(a1, b1, int((b1 - a1) * resolution) + 1, dtype=torch.float64)
        g2 = torch.linspace(a2, b2, int((b2 - a2) * resolution) + 1, dtype=torch.float64)
        # trapezoid weights: half at the edges
        lw1 = torch.full_like(g1, math.log(g1[1] - g1[0]))
        lw2 = torch.full_like(g2, math.log(g2[1] - g2[0]))
        lw1[[0, -1]] -= math.log(2)
        lw2[[0, -1]] -= math.log(2)
        total = torch.tensor(-math.inf, dtype=torch.float64)
        for i in range(0, len(g1), 256):  # rows in chunks: bounded memory
            z1, z2 = torch.meshgrid(g1[i:i + 256], g2, indexing="ij")
            u = self(torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)).view(z1.shape)
            chunk = torch.logsumexp((-u + lw1[i:i + 256, None] + lw2[None, :]).reshape(-1), 0)
            total = torch.logaddexp(total, chunk)
        return float(total)


_FUNCTIONS = {"u1": _u1, "u2": _u2, "u3": _u3, "u4": _u4}
# boxes holding all but ~1e-12 of the mass (8 standard deviations of each Gaussian factor)
_QUAD_BOXES = {"u1": ((-6.0, 6.0), (-6.0, 6.0))}
_CONFINED_BOX = ((-BOX - 8 * WALL_SCALE, BOX + 8 * WALL_SCALE), (-8.0, 6.0))
ENERGY_NAMES = tuple(_FUNCTIONS)


def energy(name: str, confine: bool = True) -> Energy:
    """The energy ``U`` named ``"u1"`` .. ``"u4"`` (case-insensitive), a callable ``z [B, 2] -> [B]``.

    ``confine`` adds the soft wall at ``|z₁| = 4`` to U2–U4 (U1 is proper and never changed).
    """
    key = str(name).lower()
    if key not in _FUNCTIONS:
        raise ValueError(f"unknown energy {name!r}; choose one of {ENERGY_NAMES} (Rezende & Mohamed 2015, Table 1)")
    confined = confine and key != "u1"
    return Energy(key, _FUNCTIONS[key], confined, _QUAD_BOXES.get(key, _CONFINED_BOX))
