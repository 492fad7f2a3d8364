"""Radial flow (Rezende & Mohamed 2015): ``f(z) = z + β h(α, r) (z − z₀)`` on vectors ``[B, D]``.

Math:
    ``r = ‖z − z₀‖``, ``h(α, r) = 1 / (α + r)`` with ``α > 0``. Along a ray from ``z₀`` the radius
    becomes ``r' = r (1 + β h)``; the Jacobian has eigenvalue ``1 + βh`` (``D − 1`` times, across the
    ray) and ``1 + βh + βh'(r) r = 1 + αβ / (α + r)²`` (along it), so

        ``log|det ∂f/∂z| = (D − 1) log(1 + βh) + log(1 + αβ h²)``   (nats, per sample).

    The map is invertible iff ``β ≥ −α``. The free parameters are unconstrained::

        α = softplus(α̃),    β = −α + softplus(β̃)    (so β > −α always).

    ``r'`` is then strictly increasing in ``r``, but solving for ``r`` needs a root, so the layer
    has no inverse here (:class:`~glowlab.core.InverseNotAvailable`); use it on the sampling side
    of a density (see :class:`glowlab.vi.VariationalFlow`).

Amortised version: ``context_features=C`` adds a zero-initialised linear function of
``context [B, C]`` to ``(z₀, α̃, β̃)`` per sample.

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
    section 4.1 and appendix A.2.

Example:
    >>> import torch
    >>> from glowlab.layers.vi import Radial
    >>> f = Radial(3)
    >>> y, ladj = f(torch.randn(4, 3))
    >>> tuple(y.shape), tuple(ladj.shape)
    ((4, 3), (4,))
    >>> alpha, beta, _ = f.coefficients()
    >>> bool((beta >= -alpha).all())
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.core import logdet_dtype
from glowlab.layers.vi.context import ForwardOnlyVectorLayer

__all__ = ["Radial"]


class Radial(ForwardOnlyVectorLayer):
    """One radial layer ``f(z) = z + β (z − z₀) / (α + ‖z − z₀‖)``; forward only.

    Args:
        features: the dimension ``D`` of the vectors ``[B, D]``.
        context_features: width ``C`` of a ``context [B, C]`` that shifts ``(z₀, α̃, β̃)`` per
            sample (amortised inference); ``None`` for shared parameters.

    ``forward(z, context) -> (f(z) [B, D], log|det ∂f/∂z| [B] nats)``.
    """

    def __init__(self, features: int, context_features: int | None = None):
        super().__init__(features, context_features, features + 2)
        bound = 1.0 / math.sqrt(features)
        self.z0 = nn.Parameter(torch.empty(features).uniform_(-bound, bound))
        self.alpha_raw = nn.Parameter(torch.empty(()).uniform_(-bound, bound))
        self.beta_raw = nn.Parameter(torch.empty(()).uniform_(-bound, bound))

    def coefficients(self, context=None, batch: int | None = None):
        """``(α, β, z₀)``: ``[], [], [D]``, or ``[B], [B], [B, D]`` with a context; ``β > −α``."""
        z0, a_raw, b_raw = self.z0, self.alpha_raw, self.beta_raw
        shift = self.head(context, batch)
        if shift is not None:
            dz, da, db = shift.split([self.features, 1, 1], dim=-1)
            z0, a_raw, b_raw = z0 + dz, a_raw + da.squeeze(-1), b_raw + db.squeeze(-1)
        alpha = F.softplus(a_raw)
        return alpha, F.softplus(b_raw) - alpha, z0

    def forward(self, z: torch.Tensor, context=None):
        self.check_input(z)
        alpha, beta, z0 = self.coefficients(context, z.shape[0])
        diff = z - z0
        r = torch.linalg.vector_norm(diff, dim=-1)  # [B]
        h = 1 / (alpha + r)
        y = z + (beta * h).unsqueeze(-1) * diff
        dtype = logdet_dtype(z)
        alpha, beta, h = alpha.to(dtype), beta.to(dtype), h.to(dtype)
        # both arguments of log1p are > -1 because beta > -alpha
        ladj = (self.features - 1) * torch.log1p(beta * h) + torch.log1p(alpha * beta * h.square())
        return y, ladj.expand(z.shape[0])
