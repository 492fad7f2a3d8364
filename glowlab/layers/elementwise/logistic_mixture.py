"""Flow++'s elementwise logistic-mixture CDF transform: mixture CDF, then logit, then affine.

For one element with ``K`` components (weights ``π = softmax(logits)``, means ``μ``, scales
``σ = exp(log_scales)``) and an affine part ``(a, b)``:

    F(x) = Σ_k π_k sigmoid((x - μ_k) / σ_k),       y = exp(a) · logit(F(x)) + b,

    log dy/dx = a + log f(x) - log F(x) - log(1 - F(x)),     f(x) = Σ_k π_k logistic'((x - μ_k)/σ_k) / σ_k.

``log F``, ``log(1 - F)`` and ``log f`` are computed as log-sum-exps of log-sigmoids, so the map
stays finite far in the tails, where ``F`` rounds to 0 or 1 in floating point.

There is no closed-form inverse. :func:`logistic_mixture` solves ``logit F(x) = (y - b) e^{-a}`` in
float64 by Newton's method safeguarded by bisection inside a bracket that always holds the root:
``[min_k (μ_k + σ_k z), max_k (μ_k + σ_k z)]`` for the target logit ``z`` (at the left end every
component's CDF is at most ``sigmoid(z)``, at the right end at least). It stops once the bracket is
at most ``2 · tol`` wide (by default ``tol = 1e-10``, absolute, in ``x``), checking the points
``x ± tol`` when Newton's steps have become small, and raises :class:`~glowlab.core.InversionError`
otherwise after ``max_iter`` iterations. The returned ``x`` is then within ``tol`` of the exact
inverse. Gradients of the inverse flow through one implicit-function step at the solution.

References:
    Ho, Chen, Srinivas, Duan, Abbeel, "Flow++: Improving Flow-Based Generative Models with
    Variational Dequantization and Architecture Design", ICML 2019.

Example:
    >>> import torch
    >>> x = torch.linspace(-5, 5, 7, dtype=torch.float64)
    >>> logits, means, log_scales = torch.randn(7, 4), torch.randn(7, 4), torch.randn(7, 4) * 0.5
    >>> a, b = torch.randn(7) * 0.1, torch.randn(7)
    >>> y, logd = logistic_mixture(x, logits, means, log_scales, a, b)
    >>> x2, logd_inv = logistic_mixture(y, logits, means, log_scales, a, b, inverse=True)
    >>> bool((x - x2).abs().max() <= 1e-10), bool(torch.allclose(logd, -logd_inv))
    (True, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glowlab.core.errors import InversionError

__all__ = ["DEFAULT_TOL", "logistic_mixture", "mixture_logit_cdf", "mixture_params_per_dim"]

DEFAULT_TOL = 1e-10


def mixture_params_per_dim(components: int) -> int:
    """Unconstrained numbers one dimension needs: ``K`` logits, means and log-scales, plus ``a, b``."""
    return 3 * components + 2


def mixture_logit_cdf(x, log_weights, means, log_scales) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logit F(x), log d logit F / dx)`` elementwise; parameters ``[*S, K]``, ``x`` of shape ``S``."""
    z = (x[..., None] - means) * torch.exp(-log_scales)
    log_cdf = torch.logsumexp(log_weights + F.logsigmoid(z), dim=-1)
    log_sf = torch.logsumexp(log_weights + F.logsigmoid(-z), dim=-1)
    log_pdf = torch.logsumexp(log_weights + F.logsigmoid(z) + F.logsigmoid(-z) - log_scales, dim=-1)
    return log_cdf - log_sf, log_pdf - log_cdf - log_sf


def _check(x, logits, means, log_scales, a, b, tol, max_iter) -> torch.Size:
    k = logits.shape[-1]
    if k < 1 or means.shape[-1] != k or log_scales.shape[-1] != k:
        raise ValueError(f"logits, means and log_scales must share their last dimension (the K >= 1 "
                         f"components), got shapes {tuple(logits.shape)}, {tuple(means.shape)}, "
                         f"{tuple(log_scales.shape)}")
    if not (isinstance(tol, float) and tol > 0):
        raise ValueError(f"tol must be a positive float (absolute, in x), got {tol!r}")
    if not (isinstance(max_iter, int) and max_iter > 0):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    shapes = [x.shape, logits.shape[:-1], means.shape[:-1], log_scales.shape[:-1]]
    shapes += [t.shape for t in (a, b) if t is not None]
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        raise ValueError(f"shapes do not broadcast: input {tuple(x.shape)}, mixture parameters "
                         f"{tuple(logits.shape)} (components last), affine {[tuple(s) for s in shapes[4:]]}"
                         ) from None


def _solve(target, log_w, means, log_scales, tol: float, max_iter: int) -> torch.Tensor:
    """Root of the increasing ``logit F(x) = target`` by safeguarded Newton (all float64, no graph).

    Newton's step is taken when it lands inside the bracket and is at most half the previous step
    (as in Numerical Recipes' ``rtsafe``); otherwise the bracket is bisected, so it shrinks at least
    as fast as bisection every two iterations."""
    ends = means + log_scales.exp() * target[..., None]
    lo, hi = ends.amin(-1), ends.amax(-1)
    x = 0.5 * (lo + hi)
    last_step = hi - lo
    for _ in range(max_iter):
        g, log_dg = mixture_logit_cdf(x, log_w, means, log_scales)
        g = g - target
        lo = torch.where(g <= 0, x, lo)
        hi = torch.where(g >= 0, x, hi)
        step = g * torch.exp(-log_dg)
        newton = x - step
        ok = torch.isfinite(newton) & (newton >= lo) & (newton <= hi) & (2 * step.abs() <= last_step)
        x_new = torch.where(ok, newton, 0.5 * (lo + hi))
        last_step = (x_new - x).abs()
        near = ok & (step.abs() <= tol)
        if bool(near.any()):  # Newton has (nearly) converged: does [x - tol, x + tol] bracket the root?
            g_lo = mixture_logit_cdf(x_new - tol, log_w, means, log_scales)[0] - target
            g_hi = mixture_logit_cdf(x_new + tol, log_w, means, log_scales)[0] - target
            lo = torch.where(near & (g_lo <= 0), torch.maximum(lo, x_new - tol), lo)
            hi = torch.where(near & (g_hi >= 0), torch.minimum(hi, x_new + tol), hi)
        done = (hi - lo) <= 2 * tol
        x = torch.where(done, 0.5 * (lo + hi), x_new)
        if bool(done.all()):
            return x
    n_bad = int((~done).sum())
    raise InversionError(
        f"the logistic-mixture inverse did not reach tol={tol:g} for {n_bad} of {done.numel()} elements "
        f"in max_iter={max_iter} iterations (widest bracket {float((hi - lo).max()):.3g}); raise max_iter "
        f"or tol, or check the parameters for non-finite values"
    )


def logistic_mixture(
    x: torch.Tensor,
    logits: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    log_scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    inverse: bool = False,
    tol: float = DEFAULT_TOL,
    max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow++'s ``y = exp(a) · logit(F(x)) + b`` elementwise, or its inverse (see the module docstring).

    Args:
        x: inputs of any shape ``S`` (the outputs ``y`` to invert when ``inverse=True``).
        logits, means, log_scales: the ``K`` mixture components, ``[*S, K]``.
        log_scale, shift: ``a`` and ``b`` of the affine part, shape ``S`` (None: 0).
        inverse: invert numerically (float64 safeguarded Newton, accurate to ``tol`` in ``x``);
            non-finite elements of ``x`` pass through (NaN stays NaN, ±inf stays ±inf), so a sample
            that overflowed upstream is reported as non-finite rather than failing its batch.
        tol: absolute tolerance of the inverse in ``x``.
        max_iter: iterations before :class:`~glowlab.core.InversionError` is raised.
    Returns:
        ``(y, logabsdet)`` of shape ``S`` in the dtype of ``x``: ``log|dy/dx|`` per element in nats
        (for the inverse ``log|dx/dy|``, minus the forward's at the same point).
    """
    shape = _check(x, logits, means, log_scales, log_scale, shift, tol, max_iter)
    dtype = x.dtype
    k = logits.shape[-1]
    x = x.expand(shape)
    logits, means, log_scales = (t.to(dtype).expand(shape + (k,)) for t in (logits, means, log_scales))
    a = x.new_zeros(()) if log_scale is None else log_scale.to(dtype)
    b = x.new_zeros(()) if shift is None else shift.to(dtype)
    log_w = torch.log_softmax(logits, dim=-1)
    if not inverse:
        logit, log_d = mixture_logit_cdf(x, log_w, means, log_scales)
        return a.exp() * logit + b, log_d + a
    target = (x - b) * torch.exp(-a)
    with torch.no_grad():
        d64 = torch.float64
        t, lw, m, ls = (v.detach().to(d64) for v in (target, log_w, means, log_scales))
        # a non-finite input (one that overflowed upstream, e.g. a sample at a high temperature)
        # passes through, NaN to NaN and ±inf to ±inf, as closed-form inverses do; non-finite
        # parameters, and finite inputs that do not converge, still raise
        finite = torch.isfinite(t)
        root = _solve(torch.where(finite, t, torch.zeros((), dtype=d64)), lw, m, ls, tol, max_iter)
        root = torch.where(finite, root, t)
    root = root.to(dtype)
    # one implicit-function step: the value stays the root (the residual is ~0), and the gradients
    # with respect to y and the parameters are those of the exact inverse
    logit, log_d = mixture_logit_cdf(root, log_w, means, log_scales)
    correction = (logit - target) * torch.exp(-log_d.detach())
    out = torch.where(finite.to(x.device), root - correction + correction.detach(), root)
    if torch.is_grad_enabled():  # the ladj's own gradient needs the derivative taken at `out`
        log_d = mixture_logit_cdf(out, log_w, means, log_scales)[1]
    return out, -(log_d + a)
