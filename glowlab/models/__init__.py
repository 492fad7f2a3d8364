"""Glow, RealNVP and NICE: compositions of ``glowlab.flows`` with priors (no Lightning needed)."""

from glowlab.image.multiscale import MultiscaleFlow
from glowlab.models.glow import Glow
from glowlab.models.nice import NICE
from glowlab.models.realnvp import RealNVP

__all__ = ["MultiscaleFlow", "Glow", "RealNVP", "NICE"]
