"""Invertible layers under the bijection contract (:mod:`glowlab.core`), grouped by family.

* :mod:`glowlab.layers.elementwise`: per-dimension maps (ActNorm, diagonal scale, splines, mixtures).
* :mod:`glowlab.layers.linear`: channel mixing (invertible 1x1 convolutions, permutations).
* :mod:`glowlab.layers.coupling`: affine, additive, spline and mixture couplings.
* :mod:`glowlab.layers.autoregressive`, :mod:`glowlab.layers.continuous`, :mod:`glowlab.layers.vi`:
  the other families.
"""

from glowlab.layers.autoregressive import MADE, InverseAutoregressive, MaskedAutoregressive
from glowlab.layers.continuous import CNF
from glowlab.layers.coupling import (
                                     AdditiveCoupling,
                                     AffineCoupling,
                                     MixtureCoupling,
                                     MLPAdditiveCoupling,
                                     SplineCoupling,
                                     checkerboard_mask,
)
from glowlab.layers.elementwise import ActNorm, DiagonalScale, all_reduce_mean
from glowlab.layers.linear import InvConv1x1, InvConv1x1LU, Reverse, Shuffle
from glowlab.layers.vi import Planar, Radial, VectorAffineCoupling

__all__ = ["ActNorm", "DiagonalScale", "all_reduce_mean", "InvConv1x1", "InvConv1x1LU", "Reverse", "Shuffle",
           "AffineCoupling", "AdditiveCoupling", "MLPAdditiveCoupling", "SplineCoupling", "MixtureCoupling",
           "checkerboard_mask", "MADE", "MaskedAutoregressive", "InverseAutoregressive", "CNF", "Planar", "Radial",
           "VectorAffineCoupling"]
