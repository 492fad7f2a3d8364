"""Invertible 1x1 convolutions (Kingma & Dhariwal, 2018), plain and LU-decomposed, for images and vectors.

For images ``[B, C, H, W]`` the layer is ``y = W x`` at every pixel (a 1x1 convolution); for
vectors ``[B, D]`` it is the linear map ``y = W x``. ladj ``[B]`` nats: ``H * W * log|det W|``
(``log|det W|`` for vectors).

**Eval cache.** In eval mode, without autograd, ``W`` and ``log|det W|`` are cached, and ``W^-1``
too once an inverse has been asked for (the forward never computes the inverse). The cache is
keyed on each parameter's storage, dtype and version counter, so in-place updates, ``.to()`` and
``load_state_dict`` invalidate it; ``train()``/``eval()`` drop it, and :meth:`invalidate_cache`
drops it explicitly. No process-wide state is involved.

*Fused optimisers* (``torch.optim.Adam(..., fused=True)``) update parameters in place without
bumping their version counters. :func:`glowlab.optim.make_optimizer` (what training uses) registers
a step hook on its own optimiser that bumps them. If you step a fused optimiser of your own while
the layer stays in eval mode, call :func:`glowlab.optim.track_in_place_updates` on it once, or call
``invalidate_cache()`` on the layer (or simply ``model.train()``/``model.eval()``) after the step.

**Singular W.** The plain layer's ``W`` is free and can become singular; its forward pass is then
still defined (ladj ``-inf``), but :meth:`inverse` raises :class:`~glowlab.core.InversionError`
naming the layer. The LU layer is invertible by construction as long as ``exp(log_s)`` is nonzero.

Example:
    >>> import torch
    >>> conv = InvConv1x1LU(3)
    >>> x = torch.randn(2, 3, 4, 4)
    >>> y, ladj = conv(x)
    >>> x_back, ladj_inv = conv.inverse(y)
    >>> bool(torch.allclose(x_back, x, atol=1e-5)), bool(torch.allclose(ladj, -ladj_inv))
    (True, True)
    >>> v, _ = InvConv1x1(3)(torch.randn(5, 3))  # vectors: y = W x
    >>> v.shape
    torch.Size([5, 3])

References:
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

import torch
from torch import nn

from glowlab.core.bijection import Bijection, logdet_dtype
from glowlab.core.errors import InversionError

__all__ = ["InvConv1x1", "InvConv1x1LU", "random_orthogonal"]

_LAYOUTS = {None: "[B, C] or [B, C, H, W]", 1: "[B, C]", 3: "[B, C, H, W]"}


def random_orthogonal(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random ``[n, n]`` orthogonal matrix (QR of a Gaussian matrix, in float64)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def _mix_channels(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y[b, o, ...] = sum_c w[o, c] x[b, c, ...]``: a linear map of vectors, or a 1x1 convolution as
    a batched matrix product (cheaper than oneDNN's ``conv2d`` for a flow's few channels on the CPU)."""
    if x.dim() == 2:
        return x @ w.T
    return torch.matmul(w, x.flatten(2)).view(x.shape[0], w.shape[0], *x.shape[2:])


class _CachedWeight(Bijection):
    """Shared machinery: ``y = W x`` per pixel (or per vector), with an eval cache (module docstring).

    The map runs with autocast disabled, in the input's dtype (float32 or wider): the 1x1 conv is
    cheap next to the coupling networks, and keeping it exact keeps the inverse exact.
    """

    event_dim = None

    def __init__(self, num_channels: int, event_dim: int | None = None):
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"1x1 conv needs num_channels >= 1, got {num_channels}")
        if event_dim not in _LAYOUTS:
            raise ValueError(f"event_dim must be None, 1 (vectors [B, D]) or 3 (images [B, C, H, W]), "
                             f"got {event_dim!r}")
        self.num_channels = num_channels
        if event_dim is not None:
            self.event_dim = event_dim  # type: ignore[misc]  # per instance
        self._cache: dict | None = None

    def _weight_and_logabsdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``W`` ([C, C]) and ``log|det W|`` (scalar, float64 or float32)."""
        raise NotImplementedError

    def invalidate_cache(self) -> None:
        """Drop the cached eval weights; the next eval call recomputes them from the parameters."""
        self._cache = None

    def _key(self, dtype: torch.dtype):
        return dtype, tuple((p.data_ptr(), p._version, p.dtype) for p in self.parameters())

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _inverse_of(self, w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``W^-1`` in float64, cast to ``dtype``; :class:`InversionError` if W is singular."""
        w_inv, info = torch.linalg.inv_ex(w.double())
        if int(info) != 0 or not torch.isfinite(w_inv).all():
            lad = float(torch.linalg.slogdet(w.detach().double()).logabsdet)
            raise InversionError(
                f"{type(self).__name__}({self.num_channels}) cannot invert its weight: W is singular "
                f"(log|det W| = {lad:.3g}). Its forward pass and "
                f"log-density still work, but sampling and inverse() do not; retrain with InvConv1x1LU "
                f"(invertible by construction) or load a checkpoint whose weight is invertible"
            )
        return w_inv.to(dtype)

    def _get(self, dtype: torch.dtype, need_inverse: bool):
        """``(W, W^-1 or None, log|det W|)`` in ``dtype``, from the cache where allowed."""
        if (self.training or torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
                or torch.compiler.is_compiling()):  # compiled graphs compute (or constant-fold) it in-graph
            w, lad = self._weight_and_logabsdet()
            return w.to(dtype), self._inverse_of(w, dtype) if need_inverse else None, lad
        key = self._key(dtype)
        cache = self._cache
        if cache is None or cache["key"] != key:
            with torch.no_grad():
                w, lad = self._weight_and_logabsdet()
            cache = self._cache = {"key": key, "w": w.to(dtype), "lad": lad, "w_inv": None}
        if need_inverse and cache["w_inv"] is None:
            with torch.no_grad():
                cache["w_inv"] = self._inverse_of(cache["w"], dtype)
        return cache["w"], cache["w_inv"], cache["lad"]

    def _check(self, x: torch.Tensor) -> None:
        dims_ok = x.dim() in (2, 4) if self.event_dim is None else x.dim() == self.event_dim + 1
        if not dims_ok or x.shape[1] != self.num_channels:
            raise ValueError(f"1x1 conv expects input {_LAYOUTS[self.event_dim]} with C={self.num_channels}, "
                             f"got {tuple(x.shape)}")

    def _ladj(self, lad: torch.Tensor, x: torch.Tensor, sign: float) -> torch.Tensor:
        spatial = x[0, 0].numel()
        return (sign * lad.to(logdet_dtype(x)) * spatial).expand(x.shape[0])

    def forward(self, x: torch.Tensor, context=None):
        self._check(x)
        with torch.autocast(x.device.type, enabled=False):
            w, _, lad = self._get(x.dtype, need_inverse=False)
            y = _mix_channels(w, x)
        return y, self._ladj(lad, x, 1.0)

    def inverse(self, y: torch.Tensor, context=None):
        self._check(y)
        with torch.autocast(y.device.type, enabled=False):
            _, w_inv, lad = self._get(y.dtype, need_inverse=True)
            x = _mix_channels(w_inv, y)
        return x, self._ladj(lad, y, -1.0)


class InvConv1x1(_CachedWeight):
    """Plain invertible 1x1 convolution, ``y = W x`` per pixel (or per vector), W initialised orthogonal.

    ``log|det W|`` is computed by ``slogdet`` in float64 and ``W^-1`` by ``inv`` in float64, only
    when the inverse is asked for. Logdet ``[B]`` nats: ``H * W * log|det W|``.

    Args:
        num_channels: C (D for vectors).
        event_dim: ``None`` (vectors and images), 1 or 3.
    """

    def __init__(self, num_channels: int, event_dim: int | None = None):
        super().__init__(num_channels, event_dim)
        self.weight = nn.Parameter(random_orthogonal(num_channels).to(torch.get_default_dtype()))

    def _weight_and_logabsdet(self):
        lad = torch.linalg.slogdet(self.weight.double()).logabsdet
        return self.weight, lad


class InvConv1x1LU(_CachedWeight):
    """LU-decomposed invertible 1x1 convolution (vectors: an LU-parametrised linear map).

    ``W = P (L + I) (U + diag(sign * exp(log_s)))`` with the permutation P and the signs fixed
    (buffers), L strictly lower and U strictly upper triangular. ``log|det W| = sum(log_s)``, so
    the logdet (``[B]`` nats) is ``H * W * sum(log_s)``: O(C) instead of O(C^3).

    Args:
        num_channels: C (D for vectors).
        event_dim: ``None`` (vectors and images), 1 or 3.
    """

    def __init__(self, num_channels: int, event_dim: int | None = None):
        super().__init__(num_channels, event_dim)
        c = num_channels
        dt = torch.get_default_dtype()
        p, lower, upper = torch.linalg.lu(random_orthogonal(c))
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.to(dt))
        self.register_buffer("sign_s", torch.sign(s).to(dt))
        self.register_buffer("lower_mask", torch.tril(torch.ones(c, c, dtype=dt), -1))
        self.register_buffer("eye", torch.eye(c, dtype=dt))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(dt))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dt))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).to(dt))

    def _weight_and_logabsdet(self):
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        w = self.perm @ lower @ upper
        return w, self.log_s.sum()
