"""glowlab: normalizing flows (Glow, RealNVP, NICE) for images, with exact bits/dim.

The flows (``glowlab.flows``), models (``glowlab.models``) and likelihood accounting
(``glowlab.likelihood``) depend on torch and einops only. Lightning and Hydra are imported only
by ``glowlab.training`` and the entry points.
"""

__version__ = "0.1.0"
