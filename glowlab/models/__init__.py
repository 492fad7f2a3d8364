"""Every model is a :class:`~glowlab.core.Density` (no Lightning needed).

* coupling flows for images: :class:`Glow`, :class:`RealNVP`, :class:`NICE` (multiscale, on
  :class:`~glowlab.image.MultiscaleFlow`);
* autoregressive flows: :class:`MAF`, :class:`IAF` (vectors and images);
* continuous flows: :class:`FFJORD` (images), :class:`VectorFFJORD` (vectors);
* variational inference: :class:`VariationalFlow` (a base pushed through planar, radial, coupling or
  IAF layers) and :class:`FlowVAE`, a VAE whose posterior is a flow (not a density itself: its
  ``elbo`` is a bound and its ``iwae`` an estimate of ``log p(x)``).
"""

from glowlab.image.multiscale import MultiscaleFlow
from glowlab.models.ffjord import FFJORD, VectorFFJORD
from glowlab.models.glow import Glow
from glowlab.models.maf import IAF, MAF
from glowlab.models.nice import NICE
from glowlab.models.realnvp import RealNVP
from glowlab.models.vae import FlowVAE
from glowlab.vi.density import VariationalFlow

__all__ = ["FFJORD", "IAF", "MAF", "NICE", "Glow", "MultiscaleFlow", "RealNVP", "VectorFFJORD", "FlowVAE",
           "VariationalFlow"]
