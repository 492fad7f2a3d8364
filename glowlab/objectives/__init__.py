"""What a training step minimises, one class each, apart from the LightningModule:

* :class:`MaximumLikelihood`: bits/dim of quantised images (nats for continuous data), with Glow's
  optional class-conditional classifier loss (``weight_y``);
* :class:`ReverseKL`: variational inference against an unnormalised target energy (no dataset);
* :class:`ELBO`: the evidence lower bound of a VAE whose posterior is a flow.

Each is an :class:`Objective`: ``loss(model, batch) -> (loss, metrics)``. A run picks one in its
config (``objective: maximum_likelihood | reverse_kl | elbo``).
"""

from glowlab.objectives.base import Objective, batch_context
from glowlab.objectives.elbo import ELBO
from glowlab.objectives.maximum_likelihood import MaximumLikelihood
from glowlab.objectives.reverse_kl import ReverseKL, build_target

__all__ = ["ELBO", "MaximumLikelihood", "Objective", "ReverseKL", "batch_context", "build_target"]
