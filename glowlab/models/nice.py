"""NICE (Dinh et al., 2015): additive MLP couplings on the flattened image and a diagonal scaling."""

from __future__ import annotations

from glowlab.core import Compose
from glowlab.image.multiscale import MultiscaleFlow, check_divisible
from glowlab.image.priors import LearnedPrior, LogisticPrior
from glowlab.layers import DiagonalScale, MLPAdditiveCoupling

__all__ = ["NICE"]

PRIORS = ("logistic", "gaussian")


class NICE(MultiscaleFlow):
    """NICE: ``num_couplings`` additive couplings (alternating even/odd entries of the flattened
    image, each an MLP of ``hidden_layers`` x ``hidden_features``), then a per-dimension scaling.

    A single-scale model: ``forward`` returns a list with one latent ``[B, C, H, W]``.

    Args:
        image_shape: ``(C, H, W)``.
        prior: ``"logistic"`` (the paper's choice for MNIST) or ``"gaussian"`` (N(0, I)).
        num_classes, context_features: a conditional model; the context shifts the prior's location
            (NICE's MLP couplings take no context).

    Example:
        >>> import torch
        >>> m = NICE(image_shape=(1, 4, 4), num_couplings=2, hidden_features=8, hidden_layers=1)
        >>> m.log_prob(torch.rand(3, 1, 4, 4) - 0.5).shape, m.sample(2).shape
        (torch.Size([3]), torch.Size([2, 1, 4, 4]))

    References:
        Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", ICLR 2015 workshop.
    """

    def __init__(self, image_shape=(1, 28, 28), num_couplings: int = 4, hidden_features: int = 1000,
                 hidden_layers: int = 5, prior: str = "logistic", num_classes: int = 0, context_features: int = 0):
        c, h, w = check_divisible(image_shape, 0, "NICE")
        d = c * h * w
        if num_couplings < 1:
            raise ValueError(f"num_couplings must be >= 1, got {num_couplings}")
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        steps = [MLPAdditiveCoupling(d, hidden_features, hidden_layers, parity=i % 2) for i in range(num_couplings)]
        steps.append(DiagonalScale((c, h, w)))
        if prior == "logistic":
            top = LogisticPrior((c, h, w), num_classes, context_features)
        else:
            top = LearnedPrior((c, h, w), False, num_classes, context_features)
        super().__init__(image_shape, [Compose(steps)], [None], top)
        self.config = dict(num_couplings=num_couplings, hidden_features=hidden_features,
                           hidden_layers=hidden_layers, prior=prior)
