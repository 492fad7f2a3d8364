"""NICE (Dinh et al., 2015): additive MLP couplings on the flattened image and a diagonal scaling."""

from __future__ import annotations


from glowlab.core import Compose as FlowSequence
from glowlab.image import LearnedPrior
from glowlab.layers import DiagonalScale, MLPAdditiveCoupling
from glowlab.image.split import LogisticPrior
from glowlab.image.multiscale import MultiscaleFlow, check_divisible

__all__ = ["NICE"]


class NICE(MultiscaleFlow):
    """NICE: ``num_couplings`` additive couplings (alternating even/odd entries of the flattened
    image, each an MLP of ``hidden_layers`` x ``hidden_features``), then a per-dimension scaling.

    A single-scale model: ``forward`` returns a list with one latent ``[B, C, H, W]``.

    Args:
        image_shape: ``(C, H, W)``.
        prior: ``"logistic"`` (the paper's choice for MNIST) or ``"gaussian"``.

    References:
        Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", ICLR 2015 workshop.
    """

    def __init__(self, image_shape=(1, 28, 28), num_couplings: int = 4, hidden_features: int = 1000,
                 hidden_layers: int = 5, prior: str = "logistic", num_classes: int = 0):
        c, h, w = check_divisible(image_shape, 0, "NICE")
        d = c * h * w
        if num_couplings < 1:
            raise ValueError(f"num_couplings must be >= 1, got {num_couplings}")
        if prior not in ("logistic", "gaussian"):
            raise ValueError(f"prior must be 'logistic' or 'gaussian', got {prior!r}")
        steps = [MLPAdditiveCoupling(d, hidden_features, hidden_layers, parity=i % 2) for i in range(num_couplings)]
        steps.append(DiagonalScale((c, h, w)))
        top = LogisticPrior((c, h, w), num_classes) if prior == "logistic" else LearnedPrior((c, h, w), False, num_classes)
        super().__init__(image_shape, [FlowSequence(steps)], [None], top)
        self.config = dict(num_couplings=num_couplings, hidden_features=hidden_features,
                           hidden_layers=hidden_layers, prior=prior)


