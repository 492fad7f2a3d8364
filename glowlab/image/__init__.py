"""What only images need: squeeze, multiscale split and the latent priors, the multiscale model base."""

from glowlab.image.multiscale import MultiscaleFlow, check_divisible
from glowlab.image.priors import (
           GaussianPrior,
           LatentPrior,
           LearnedPrior,
           LogisticPrior,
           gaussian_log_prob,
)
from glowlab.image.split import Split
from glowlab.image.squeeze import Squeeze, Unsqueeze, squeeze2d, unsqueeze2d

__all__ = [
           "GaussianPrior",
           "LatentPrior",
           "LearnedPrior",
           "LogisticPrior",
           "MultiscaleFlow",
           "Split",
           "Squeeze",
           "Unsqueeze",
           "check_divisible",
           "gaussian_log_prob",
           "squeeze2d",
           "unsqueeze2d",
]
