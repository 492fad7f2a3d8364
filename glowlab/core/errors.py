"""Errors shared by every family of flows.

Each one is raised with a message that names the offending value and says what to do.
"""

from __future__ import annotations

__all__ = ["InverseNotAvailable", "InversionError", "ContextError"]


class InverseNotAvailable(NotImplementedError):
    """The bijection has no computable inverse (planar and radial flows, for example).

    Sampling through it is still possible in the direction it does implement; a density that needs
    the missing direction (``log_prob`` of a point it did not sample) cannot be evaluated.
    """


class InversionError(ArithmeticError):
    """The inverse exists in principle but could not be computed here: a singular weight matrix,
    a root-finder or an ODE solve that did not converge. The message says what to change."""


class ContextError(ValueError):
    """A conditioning input (``context``) is missing, has the wrong shape, or is out of range."""
