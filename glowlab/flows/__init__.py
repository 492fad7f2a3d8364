"""The layer names of glowlab 0.1, kept importable: ``from glowlab.flows import ActNorm`` still works.

New code imports from where each piece lives now: :mod:`glowlab.core` (the contracts),
:mod:`glowlab.layers`, :mod:`glowlab.image` and :mod:`glowlab.execution`.
``Flow`` and ``FlowSequence`` are the old names of :class:`glowlab.core.Bijection` and
:class:`glowlab.core.Compose`; note that ``inverse`` now returns ``(x, ladj)`` like ``forward``.
"""

from glowlab.core import Bijection as Flow
from glowlab.core import Compose as FlowSequence
from glowlab.execution import MEMORY_SAVING_MODES, MemorySavingSequence, reversible_forward
from glowlab.image import (
    LearnedPrior,
    LogisticPrior,
    Split,
    Squeeze,
    Unsqueeze,
    gaussian_log_prob,
    squeeze2d,
    unsqueeze2d,
)
from glowlab.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    DiagonalScale,
    InvConv1x1,
    InvConv1x1LU,
    MLPAdditiveCoupling,
    Reverse,
    Shuffle,
    all_reduce_mean,
    checkerboard_mask,
)
from glowlab.layers.coupling.nets import MLP, CouplingNet, ResNetCouplingNet, ZeroConv2d

__all__ = [
    "Flow", "FlowSequence", "ActNorm", "all_reduce_mean", "InvConv1x1", "InvConv1x1LU", "Reverse",
    "Shuffle", "AffineCoupling", "AdditiveCoupling", "MLPAdditiveCoupling", "checkerboard_mask",
    "CouplingNet", "ResNetCouplingNet", "MLP", "ZeroConv2d", "DiagonalScale", "Split",
    "LearnedPrior", "LogisticPrior", "gaussian_log_prob", "Squeeze", "Unsqueeze", "squeeze2d", "unsqueeze2d",
    "MemorySavingSequence", "MEMORY_SAVING_MODES", "reversible_forward",
]
