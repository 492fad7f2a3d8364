"""Coupling layers: one part of the input is kept and parameterises an invertible map of the rest."""

from glowlab.layers.coupling.affine import (
    AdditiveCoupling,
    AffineCoupling,
    MLPAdditiveCoupling,
    broadcast_cond,
    checkerboard_mask,
)

__all__ = ["AffineCoupling", "AdditiveCoupling", "MLPAdditiveCoupling", "checkerboard_mask", "broadcast_cond"]
