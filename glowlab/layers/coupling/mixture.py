"""Flow++'s logistic-mixture CDF coupling for images and vectors.

``y_b = exp(a) · logit(Σ_k π_k sigmoid((x_b - μ_k) / σ_k)) + b`` elementwise, with ``π, μ, log σ,
a, b`` (``3 K + 2`` numbers per changed element) from a network of the kept part ``x_a``; see
:func:`glowlab.layers.elementwise.logistic_mixture.logistic_mixture`. All-zero parameters give
``logit(sigmoid(x)) = x``: a fresh layer is the identity. ``log σ`` is clamped below at
``min_log_scale`` (Flow++ uses -7) so that no component collapses to a step, and the affine log-scale
is bounded as ``a = r_c · tanh(a_raw)`` with a learned per-channel ``r_c`` (initialised at 1), as in
Flow++'s code: an unbounded ``a`` lets ``exp(a)`` flatten the map until its inverse is lost to
rounding.

The inverse has no closed form: Newton's method safeguarded by bisection in float64, to ``tol``
(absolute, in ``x``), raising :class:`~glowlab.core.InversionError` if it does not converge
(``inverse_kind = "numerical"``; reversible backpropagation refuses such layers). ``ladj`` is
``[B]`` nats.

References:
    Ho, Chen, Srinivas, Duan, Abbeel, "Flow++: Improving Flow-Based Generative Models with
    Variational Dequantization and Architecture Design", ICML 2019.

Example:
    >>> import torch
    >>> f = MixtureCoupling(4, hidden_channels=8, components=3)
    >>> x = torch.randn(2, 4, 3, 3)
    >>> y, ladj = f(x)
    >>> x2, ladj_inv = f.inverse(y)
    >>> bool(torch.allclose(x, x2, atol=1e-5)), f.inverse_is_cheap
    (True, False)
"""

from __future__ import annotations

import torch
from torch import nn

from glowlab.layers.coupling.elementwise import ElementwiseCoupling
from glowlab.layers.elementwise.logistic_mixture import DEFAULT_TOL, logistic_mixture

__all__ = ["MixtureCoupling"]


class MixtureCoupling(ElementwiseCoupling):
    """Logistic-mixture CDF coupling (see the module docstring).

    Args:
        in_channels, hidden_channels, mask, parity, net, num_blocks, actnorm, cond_channels, event_dim:
            as in :class:`~glowlab.layers.coupling.elementwise.ElementwiseCoupling`.
        components: mixture components K (Flow++ uses 32 on CIFAR-10).
        min_log_scale: lower clamp of the components' log-scales.
        tol: absolute tolerance of the numerical inverse, in ``x``.
        max_iter: iterations of the inverse before :class:`~glowlab.core.InversionError`.
    """

    inverse_kind = "numerical"

    def __init__(self, in_channels: int, hidden_channels: int = 512, mask: str = "channel", parity: int = 0,
                 net: str | None = None, num_blocks: int = 2, actnorm: bool = True, cond_channels: int = 0,
                 event_dim: int = 3, components: int = 8, min_log_scale: float = -7.0, tol: float = DEFAULT_TOL,
                 max_iter: int = 100):
        if not isinstance(components, int) or components < 1:
            raise ValueError(f"components must be a positive integer, got {components!r}")
        if not (isinstance(tol, float) and tol > 0) or not (isinstance(max_iter, int) and max_iter > 0):
            raise ValueError(f"tol must be a positive float and max_iter a positive integer, got {tol!r}, "
                             f"{max_iter!r}")
        self.params_per_dim = 3 * components + 2
        super().__init__(in_channels, hidden_channels, mask, parity, net, num_blocks, actnorm, cond_channels,
                         event_dim)
        self.components, self.min_log_scale = components, float(min_log_scale)
        self.tol, self.max_iter = tol, max_iter
        self.rescale = nn.Parameter(torch.ones(self.n_changed))

    def _params(self, kept: torch.Tensor, context, dtype: torch.dtype) -> torch.Tensor:
        params = super()._params(kept, context, dtype)  # [B, n_changed, *spatial, P]
        k = self.components
        r = self.rescale.to(dtype).view((-1,) + (1,) * (params.dim() - 3))
        a = r * torch.tanh(params[..., 3 * k])
        return torch.cat([params[..., :3 * k], a[..., None], params[..., 3 * k + 1:]], dim=-1)

    def _transform(self, x: torch.Tensor, params: torch.Tensor, inverse: bool):
        k = self.components
        logits, means, log_scales = params[..., :k], params[..., k:2 * k], params[..., 2 * k:3 * k]
        log_scales = log_scales.clamp(min=self.min_log_scale)
        a, b = params[..., 3 * k], params[..., 3 * k + 1]
        return logistic_mixture(x, logits, means, log_scales, a, b, inverse=inverse, tol=self.tol,
                                max_iter=self.max_iter)
