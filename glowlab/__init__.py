"""glowlab: normalizing flows in PyTorch, with exact bits/dim.

Families: coupling flows (Glow, RealNVP, NICE; spline and mixture couplings), autoregressive flows
(MAF, IAF), continuous flows (FFJORD) and flows for variational inference (planar, radial, flow
posteriors). All keep the two contracts of :mod:`glowlab.core`.

The contracts (``glowlab.core``), layers (``glowlab.layers``), models (``glowlab.models``) and
likelihood accounting (``glowlab.likelihood``) need torch, einops, torchdiffeq and Hydra's object
locator only; Lightning is imported by ``glowlab.training`` and the entry points.
"""

__version__ = "0.2.0"
