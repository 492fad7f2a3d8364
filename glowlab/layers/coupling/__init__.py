"""Coupling layers: one part of the input is kept and parameterises an invertible map of the rest.

* :class:`AffineCoupling`, :class:`AdditiveCoupling` (Glow, RealNVP, NICE), :class:`MLPAdditiveCoupling`;
* :class:`SplineCoupling` (rational-quadratic, Durkan et al. 2019) and :class:`MixtureCoupling`
  (Flow++'s logistic-mixture CDF, inverted numerically).
"""

from glowlab.layers.coupling.affine import (
    AdditiveCoupling,
    AffineCoupling,
    MLPAdditiveCoupling,
    broadcast_cond,
    checkerboard_mask,
)
from glowlab.layers.coupling.mixture import MixtureCoupling
from glowlab.layers.coupling.spline import SplineCoupling

__all__ = ["AffineCoupling", "AdditiveCoupling", "MLPAdditiveCoupling", "SplineCoupling", "MixtureCoupling",
           "checkerboard_mask", "broadcast_cond"]
