"""What only images need: squeeze, multiscale split and its priors, the multiscale model base."""

from glowlab.image.multiscale import MultiscaleFlow, check_divisible
from glowlab.image.split import LearnedPrior, LogisticPrior, Split, gaussian_log_prob
from glowlab.image.squeeze import Squeeze, Unsqueeze, squeeze2d, unsqueeze2d

__all__ = ["MultiscaleFlow", "check_divisible", "Split", "LearnedPrior", "LogisticPrior", "gaussian_log_prob",
           "Squeeze", "Unsqueeze", "squeeze2d", "unsqueeze2d"]
