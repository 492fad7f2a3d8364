"""Continuous normalizing flows (FFJORD): an ODE solve as an invertible layer.

* :class:`CNF`: the layer (forward integrates 0 -> T, inverse T -> 0, both return the ladj);
* :class:`ODEMLP`, :class:`ODEConvNet`: time-conditioned dynamics for vectors and images;
* :func:`exact_divergence`, :func:`hutchinson_divergence` (an unbiased estimate);
* :class:`ODESolveError`: a solve that hit its step limit or underflowed its step size;
* :func:`nfe_counts`, :func:`reset_nfe`, :func:`regularization_loss`: what training logs and adds.
"""

from glowlab.layers.continuous.cnf import (
    ADAPTIVE_METHODS,
    CNF,
    FIXED_STEP_METHODS,
    nfe_counts,
    regularization_loss,
    reset_nfe,
)
from glowlab.layers.continuous.divergence import (
    PROBES,
    TRACE_KINDS,
    exact_divergence,
    hutchinson_divergence,
    sample_probe,
)
from glowlab.layers.continuous.nets import (
    ODEMLP,
    ConcatConv2d,
    ConcatLinear,
    ConcatSquashConv2d,
    ConcatSquashLinear,
    ODEConvNet,
)
from glowlab.layers.continuous.solve import Dynamics, NFECounter, ODESolveError, SolveFunc

__all__ = [
    "ADAPTIVE_METHODS",
    "CNF",
    "FIXED_STEP_METHODS",
    "ODEMLP",
    "PROBES",
    "TRACE_KINDS",
    "ConcatConv2d",
    "ConcatLinear",
    "ConcatSquashConv2d",
    "ConcatSquashLinear",
    "Dynamics",
    "NFECounter",
    "ODEConvNet",
    "ODESolveError",
    "SolveFunc",
    "exact_divergence",
    "hutchinson_divergence",
    "nfe_counts",
    "regularization_loss",
    "reset_nfe",
    "sample_probe",
]
