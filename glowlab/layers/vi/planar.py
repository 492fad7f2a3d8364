"""Planar flow (Rezende & Mohamed 2015): ``f(z) = z + û tanh(wᵀz + b)`` on vectors ``[B, D]``.

Math:
    With ``a = wᵀz + b`` and ``h = tanh``, the Jacobian is ``I + û h'(a) wᵀ``, so by the matrix
    determinant lemma ``log|det ∂f/∂z| = log|1 + h'(a) wᵀû|`` (nats, per sample).

    The map is invertible iff ``wᵀû ≥ −1`` (``h' ∈ (0, 1]``). The free parameter ``u`` is
    reparameterised so that this always holds::

        û = u + (softplus(wᵀu) − 1 − wᵀu) · w / ‖w‖²      so that      wᵀû = softplus(wᵀu) − 1 > −1.

    Note the division by ``‖w‖²`` (not ``‖w‖``, a bug in several public ports, which leaves
    ``wᵀû`` free to fall below −1 whenever ``‖w‖ ≠ 1``).

    The inverse has no closed form: :meth:`Planar.inverse` raises
    :class:`~glowlab.core.InverseNotAvailable`. Put the layer on the sampling side of a density
    with :class:`~glowlab.core.Inverse` (see :class:`glowlab.vi.VariationalFlow`).

Amortised version: with ``context_features=C`` the layer's ``(u, w, b)`` for each sample are the
free parameters plus a linear function of ``context [B, C]`` (an encoder's output), the head
initialised at zero so that every sample starts from the shared parameters.

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015,
    section 4.1 and appendix A.1.

Example:
    >>> import torch
    >>> from glowlab.layers.vi import Planar
    >>> f = Planar(2)
    >>> y, ladj = f(torch.randn(5, 2))
    >>> tuple(y.shape), tuple(ladj.shape)
    ((5, 2), (5,))
    >>> bool((f.w_dot_u_hat() >= -1).all())
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.core import logdet_dtype
from glowlab.layers.vi.context import ForwardOnlyVectorLayer

__all__ = ["Planar", "planar_u_hat"]


def planar_u_hat(u: torch.Tensor, w: torch.Tensor, return_dot: bool = False):
    """``û = u + (softplus(wᵀu) − 1 − wᵀu) w / ‖w‖²`` along the last dimension (any batch shape).

    Guarantees ``wᵀû = softplus(wᵀu) − 1 > −1``. ``w = 0`` gives ``û = u`` (the correction
    vanishes with ``w``). With ``return_dot=True`` also returns ``wᵀû`` (shape without the last
    dimension), computed as ``softplus(wᵀu) − 1``.
    """
    wu = (w * u).sum(-1, keepdim=True)
    w_sq = (w * w).sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    wu_hat = F.softplus(wu) - 1
    u_hat = u + (wu_hat - wu) / w_sq * w
    return (u_hat, wu_hat.squeeze(-1)) if return_dot else u_hat


class Planar(ForwardOnlyVectorLayer):
    """One planar layer ``f(z) = z + û tanh(wᵀz + b)``; forward only (see the module docstring).

    Args:
        features: the dimension ``D`` of the vectors ``[B, D]``.
        context_features: the width ``C`` of a ``context [B, C]`` that shifts ``(u, w, b)`` per
            sample (amortised inference); ``None`` for a layer with shared parameters.

    ``forward(z, context) -> (f(z) [B, D], log|det ∂f/∂z| [B] nats)``.
    """

    def __init__(self, features: int, context_features: int | None = None):
        super().__init__(features, context_features, 2 * features + 1)
        bound = 1.0 / math.sqrt(features)
        self.u = nn.Parameter(torch.empty(features).uniform_(-bound, bound))
        self.w = nn.Parameter(torch.empty(features).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(()))

    def parameters_for(self, context=None, batch: int | None = None):
        """``(û, w, b, wᵀû)`` as used by the map: ``[D], [D], [], []``, or ``[B, D], [B, D], [B], [B]``
        with a context."""
        u, w, b = self.u, self.w, self.b
        shift = self.head(context, batch)
        if shift is not None:
            du, dw, db = shift.split([self.features, self.features, 1], dim=-1)
            u, w, b = u + du, w + dw, b + db.squeeze(-1)
        u_hat, wu_hat = planar_u_hat(u, w, return_dot=True)
        return u_hat, w, b, wu_hat

    def w_dot_u_hat(self, context=None) -> torch.Tensor:
        """``wᵀû`` recomputed from ``û`` (``[]``, or ``[B]`` with a context): ``≥ −1`` for any value of the
        free parameters (the invertibility condition), up to the rounding of the dot product. The map
        itself uses the form ``softplus(wᵀu) − 1``, which rounds to exactly −1 once ``softplus(wᵀu)`` is
        below half the machine epsilon (``wᵀu`` below about −17 in float32, −37 in float64): the map is
        then singular to working precision at ``wᵀz + b = 0``, as the exact map nearly is."""
        u_hat, w, _, _ = self.parameters_for(context, None if context is None else context.shape[0])
        return (w * u_hat).sum(-1)

    def forward(self, z: torch.Tensor, context=None):
        self.check_input(z)
        u_hat, w, b, wu_hat = self.parameters_for(context, z.shape[0])
        a = torch.addmv(b, z, w) if w.dim() == 1 else (z * w).sum(-1) + b  # wᵀz + b, [B]
        h = torch.tanh(a)
        y = torch.addcmul(z, h.unsqueeze(-1), u_hat)
        # log|1 + h'(a) wᵀû| with h' = 1 - tanh²; wᵀû > -1 and h' in (0, 1], so the argument of log1p is > -1
        dtype = logdet_dtype(z)
        ladj = torch.log1p((1 - h.to(dtype).square()) * wu_hat.to(dtype))
        return y, ladj
