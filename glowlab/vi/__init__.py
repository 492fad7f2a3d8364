"""Variational inference with flows: the 2-D energy targets of Rezende & Mohamed (2015),
variational densities (a Gaussian pushed through planar, radial, affine-coupling or IAF layers,
optionally amortised), the ELBO and the annealed reverse-KL loss, and the Figure-3 plot.

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
"""

from glowlab.vi.density import FLOWS, DiagonalNormal, VariationalFlow, build_sampler
from glowlab.vi.energy import BOX, ENERGY_NAMES, WALL_SCALE, Energy, energy
from glowlab.vi.evaluate import annealed_free_energy, beta_schedule, elbo_estimate
from glowlab.vi.plot import plot_target_and_samples

__all__ = [
    "BOX",
    "ENERGY_NAMES",
    "FLOWS",
    "WALL_SCALE",
    "DiagonalNormal",
    "Energy",
    "VariationalFlow",
    "annealed_free_energy",
    "beta_schedule",
    "build_sampler",
    "elbo_estimate",
    "energy",
    "plot_target_and_samples",
]
