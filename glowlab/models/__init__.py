"""Every model is a :class:`~glowlab.core.Density` (no Lightning needed).

* coupling flows for images: :class:`Glow`, :class:`RealNVP`, :class:`NICE` (multiscale, on
  :class:`~glowlab.image.MultiscaleFlow`);
* autoregressive flows: :class:`MAF`, :class:`IAF` (vectors and images);
* continuous flows: :class:`FFJORD` (images), :class:`VectorFFJORD` (vectors).
"""

from glowlab.image.multiscale import MultiscaleFlow
from glowlab.models.ffjord import FFJORD, VectorFFJORD
from glowlab.models.glow import Glow
from glowlab.models.maf import IAF, MAF
from glowlab.models.nice import NICE
from glowlab.models.realnvp import RealNVP

__all__ = ["FFJORD", "IAF", "MAF", "NICE", "Glow", "MultiscaleFlow", "RealNVP", "VectorFFJORD"]
