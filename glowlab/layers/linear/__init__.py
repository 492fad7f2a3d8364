"""Linear channel mixing: invertible 1x1 convolutions (plain and LU) and fixed permutations."""

from glowlab.layers.linear.invconv import InvConv1x1, InvConv1x1LU, random_orthogonal
from glowlab.layers.linear.permutation import Reverse, Shuffle

__all__ = ["InvConv1x1", "InvConv1x1LU", "random_orthogonal", "Reverse", "Shuffle"]
