"""Pure-PyTorch invertible layers.

Every flow maps ``[B, C, H, W]`` data to a latent of the same size with
``forward(x, cond=None) -> (y, logdet)`` (``logdet``: ``[B]`` nats, float32 or wider) and
``inverse(y, cond=None) -> x``.
"""

from glowlab.flows.actnorm import ActNorm, all_reduce_mean
from glowlab.flows.base import Flow, FlowSequence
from glowlab.flows.coupling import AdditiveCoupling, AffineCoupling, MLPAdditiveCoupling, checkerboard_mask
from glowlab.flows.invconv import InvConv1x1, InvConv1x1LU
from glowlab.flows.nets import MLP, CouplingNet, ResNetCouplingNet, ZeroConv2d
from glowlab.flows.permutation import Reverse, Shuffle
from glowlab.flows.reversible import MEMORY_SAVING_MODES, MemorySavingSequence, reversible_forward
from glowlab.flows.scaling import DiagonalScale
from glowlab.flows.split import LearnedPrior, Split, gaussian_log_prob
from glowlab.flows.squeeze import Squeeze, Unsqueeze, squeeze2d, unsqueeze2d

__all__ = [
    "Flow", "FlowSequence", "ActNorm", "all_reduce_mean", "InvConv1x1", "InvConv1x1LU", "Reverse",
    "Shuffle", "AffineCoupling", "AdditiveCoupling", "MLPAdditiveCoupling", "checkerboard_mask",
    "CouplingNet", "ResNetCouplingNet", "MLP", "ZeroConv2d", "DiagonalScale", "Split",
    "LearnedPrior", "gaussian_log_prob", "Squeeze", "Unsqueeze", "squeeze2d", "unsqueeze2d",
    "MemorySavingSequence", "MEMORY_SAVING_MODES", "reversible_forward",
]
