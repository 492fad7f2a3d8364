"""Dequantisation noise ``u ∈ (0, 1)^D`` with its log-density: uniform, or a learned ``q(u | x)``.

Both dequantisers map integer images ``x_int`` ``[B, C, H, W]`` in ``[0, 2**n_bits)`` to
``(u, log_q)``: noise ``u`` of the same shape in ``(0, 1)`` and ``log q(u | x_int)`` ``[B]`` in nats
per image. The model then sees ``x~ = (x_int + u) / 2**n - 0.5`` (:meth:`dequantize`), and

    -log P(x_int) <= E_q[-log p(x~) + log q(u | x_int)] + n D log 2

(derived in :mod:`glowlab.likelihood`, :func:`~glowlab.likelihood.variational_bits_per_dim`).

* :class:`UniformDequantizer`: ``u ~ U(0, 1)^D``, ``log q = 0``: Glow's dequantisation.
* :class:`VariationalDequantizer`: Flow++'s ``q(u | x)``, a conditional flow
  ``u = sigmoid(g(ε; x))`` of logistic noise ``ε ~ Logistic(0, 1)^D``, where ``g`` is a
  per-element affine map followed by ``depth`` checkerboard spline couplings, all conditioned on
  features of the image from a small convolutional encoder. Since ``sigmoid`` of a standard
  logistic variable is uniform, a fresh dequantiser (zero-initialised heads) *is* uniform
  dequantisation, ``log q = 0`` up to rounding, and training can only move away from it if that
  tightens the bound.

Both accept ``noise``, the uniform draw behind ``u`` (e.g. :func:`glowlab.likelihood.hashed_uniform`
for evaluation that does not depend on the batching), else they draw it with ``generator``.

References:
    Ho, Chen, Srinivas, Duan, Abbeel, "Flow++: Improving Flow-Based Generative Models with
    Variational Dequantization and Architecture Design", ICML 2019.
    Theis, van den Oord, Bethge, "A note on the evaluation of generative models", ICLR 2016.

Example:
    >>> import torch
    >>> q = VariationalDequantizer(in_channels=1, n_bits=3, hidden_channels=8, depth=2)
    >>> x_int = torch.randint(0, 8, (4, 1, 6, 6))
    >>> x_tilde, log_q = q.dequantize(x_int)
    >>> tuple(x_tilde.shape), tuple(log_q.shape), bool(log_q.abs().max() < 1e-4)  # fresh: uniform
    ((4, 1, 6, 6), (4,), True)
    >>> bool(((x_tilde + 0.5) * 8).floor().long().equal(x_int))  # x~ stays in the bin of x_int
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.core.bijection import Compose, logdet_dtype
from glowlab.layers.coupling.nets import ZeroConv2d
from glowlab.layers.coupling.spline import SplineCoupling
from glowlab.likelihood import (
    importance_weighted_bits_per_dim,
    variational_bits_per_dim,
)

__all__ = ["DEQUANTIZERS", "UniformDequantizer", "VariationalDequantizer", "dequantized_bits_per_dim"]


def _check_images(x_int: torch.Tensor, n_bits: int, in_channels: int | None = None) -> None:
    if x_int.dim() != 4 or (in_channels is not None and x_int.shape[1] != in_channels):
        want = f"[B, {in_channels}, H, W]" if in_channels is not None else "[B, C, H, W]"
        raise ValueError(f"the dequantiser expects integer images {want}, got shape {tuple(x_int.shape)}")
    if x_int.is_floating_point():
        raise ValueError(f"the dequantiser expects integer pixels (uint8 or long), got {x_int.dtype}; pass "
                         f"x_int from the data module, before any dequantisation")
    if x_int.numel() and (int(x_int.min()) < 0 or int(x_int.max()) >= 2**n_bits):
        raise ValueError(f"pixels must lie in [0, {2**n_bits}) for n_bits={n_bits}, got range "
                         f"[{int(x_int.min())}, {int(x_int.max())}]; reduce 8-bit data with reduce_bits first")


def _uniform(x_int: torch.Tensor, noise, generator, dtype) -> torch.Tensor:
    """The given ``noise`` in ``dtype`` (checked), or a fresh ``U[0, 1)`` draw of the images' shape."""
    if noise is None:
        device = generator.device if generator is not None else x_int.device
        return torch.rand(x_int.shape, generator=generator, dtype=dtype, device=device).to(x_int.device)
    if noise.shape != x_int.shape:
        raise ValueError(f"noise must have the images' shape {tuple(x_int.shape)}, got {tuple(noise.shape)}")
    return noise.to(dtype)


class _Dequantizer(nn.Module):
    """Shared ``dequantize``: ``x~ = (x_int + u) / 2**n - 0.5``, kept strictly inside its bin."""

    n_bits: int

    def dequantize(self, x_int: torch.Tensor, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
        """``(x~ [B, C, H, W] in [-0.5, 0.5), log q(u | x_int) [B] nats)``."""
        u, log_q = self(x_int, noise, generator, dtype)
        n_bins = 2**self.n_bits
        x = x_int.to(u.dtype)
        upper = torch.nextafter((x + 1) / n_bins - 0.5, torch.full_like(x, -1.0))
        return torch.minimum((x + u) / n_bins - 0.5, upper), log_q


class UniformDequantizer(_Dequantizer):
    """``u ~ U(0, 1)^D`` and ``log q = 0``: today's dequantisation, as a module with no parameters."""

    def __init__(self, n_bits: int = 8):
        super().__init__()
        if not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
            raise ValueError(f"n_bits must be an integer from 1 to 8, got {n_bits!r}")
        self.n_bits = n_bits

    def forward(self, x_int: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
        _check_images(x_int, self.n_bits)
        u = _uniform(x_int, noise, generator, dtype or torch.get_default_dtype())
        return u, torch.zeros(x_int.shape[0], dtype=logdet_dtype(u), device=u.device)


class VariationalDequantizer(_Dequantizer):
    """Flow++'s variational dequantiser ``q(u | x)`` (see the module docstring).

    Args:
        in_channels: C of the images.
        n_bits: bits per pixel of the data (the encoder sees the bin centres in ``[-0.5, 0.5)``).
        hidden_channels: width of the encoder and of the couplings' networks.
        depth: spline couplings (checkerboard masks of alternating parity) after the affine map.
        bins, bound: of the couplings' splines (identity outside ``[-bound, bound]``).
    """

    def __init__(self, in_channels: int, n_bits: int = 8, hidden_channels: int = 32, depth: int = 2,
                 bins: int = 4, bound: float = 4.0):
        super().__init__()
        if not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
            raise ValueError(f"n_bits must be an integer from 1 to 8, got {n_bits!r}")
        if in_channels < 1 or hidden_channels < 1 or depth < 0:
            raise ValueError(f"need in_channels >= 1, hidden_channels >= 1 and depth >= 0, got {in_channels}, "
                             f"{hidden_channels}, {depth}")
        self.in_channels, self.n_bits = in_channels, n_bits
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1), nn.ReLU(),
        )
        self.affine = ZeroConv2d(hidden_channels, 2 * in_channels)
        self.couplings = Compose(
            SplineCoupling(in_channels, hidden_channels, mask="checkerboard", parity=i % 2, actnorm=False,
                           cond_channels=hidden_channels, bins=bins, bound=bound)
            for i in range(depth)
        )

    def _features(self, x_int: torch.Tensor, dtype: torch.dtype):
        _check_images(x_int, self.n_bits, self.in_channels)
        n_bins = 2**self.n_bits
        h = self.encoder((x_int.to(dtype) + 0.5) / n_bins - 0.5)
        shift, log_scale = self.affine(h).to(dtype).chunk(2, dim=1)
        return h, shift, log_scale

    def forward(self, x_int: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, dtype: torch.dtype | None = None):
        """Draw ``u ~ q(u | x_int)``: ``(u [B, C, H, W] in (0, 1), log q(u | x_int) [B] nats)``.

        Differentiable in the parameters (reparameterised), as training needs.
        """
        dtype = dtype or next(self.parameters()).dtype
        h, shift, log_scale = self._features(x_int, dtype)
        tiny = torch.finfo(dtype).eps  # keep the logit finite at noise 0
        eps = torch.logit(_uniform(x_int, noise, generator, dtype).clamp(tiny, 1 - tiny))
        log_q = (F.logsigmoid(eps) + F.logsigmoid(-eps)).flatten(1).sum(1)  # the logistic base
        v = eps * log_scale.exp() + shift
        v, ladj = self.couplings(v, h)
        log_q = log_q - log_scale.flatten(1).sum(1) - ladj
        log_q = log_q - (F.logsigmoid(v) + F.logsigmoid(-v)).flatten(1).sum(1)  # u = sigmoid(v)
        return torch.sigmoid(v), log_q.to(logdet_dtype(v))

    def log_prob(self, u: torch.Tensor, x_int: torch.Tensor, logit: bool = False) -> torch.Tensor:
        """``log q(u | x_int)`` ``[B]`` nats of given noise ``u`` in ``(0, 1)`` (inverts the flow).

        With ``logit=True`` the first argument is ``logit(u)`` instead, which keeps full precision
        where ``u`` is within rounding of 0 or 1; the result is still the density of ``u``.
        """
        if u.shape != x_int.shape:
            raise ValueError(f"u must have the images' shape {tuple(x_int.shape)}, got {tuple(u.shape)}")
        h, shift, log_scale = self._features(x_int, u.dtype)
        v = u if logit else torch.logit(u)
        log_q = -(F.logsigmoid(v) + F.logsigmoid(-v)).flatten(1).sum(1)
        y, ladj_inv = self.couplings.inverse(v, h)
        eps = (y - shift) * (-log_scale).exp()
        log_q = log_q + ladj_inv - log_scale.flatten(1).sum(1)
        return log_q + (F.logsigmoid(eps) + F.logsigmoid(-eps)).flatten(1).sum(1)


#: The ``kind`` choices of a ``dequantization`` config.
DEQUANTIZERS = {"uniform": UniformDequantizer, "variational": VariationalDequantizer}


def build_dequantizer(config: dict | str | None, in_channels: int, n_bits: int) -> nn.Module:
    """A dequantiser from a config: ``None`` or ``"uniform"`` or ``{"kind": "uniform"}`` gives
    :class:`UniformDequantizer`; ``{"kind": "variational", **kwargs}`` (or ``"variational"``) gives
    :class:`VariationalDequantizer` ``(in_channels, n_bits, **kwargs)``.

    Example:
        >>> type(build_dequantizer({"kind": "variational", "depth": 1}, 3, 8)).__name__
        'VariationalDequantizer'
    """
    config = {"kind": config or "uniform"} if config is None or isinstance(config, str) else dict(config)
    kind = config.pop("kind", "uniform")
    if kind not in DEQUANTIZERS:
        raise ValueError(f"dequantization kind must be one of {sorted(DEQUANTIZERS)}, got {kind!r}")
    if kind == "uniform":
        if config:
            raise ValueError(f"uniform dequantisation takes no settings, got {sorted(config)}")
        return UniformDequantizer(n_bits)
    return VariationalDequantizer(in_channels, n_bits, **config)


def dequantized_bits_per_dim(log_prob_fn, dequantizer: nn.Module, x_int: torch.Tensor, k: int = 1,
                             noises: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Bits/dim bound of images under a continuous density and a dequantiser, from ``k`` draws.

    Args:
        log_prob_fn: ``x~ [B, C, H, W] -> log p(x~) [B]`` nats (e.g. a density's ``log_prob``).
        dequantizer: a :class:`UniformDequantizer` or :class:`VariationalDequantizer`.
        x_int: integer images ``[B, C, H, W]``.
        k: draws per image; ``k = 1`` is the variational bound (what training minimises),
            ``k > 1`` the tighter importance-weighted bound.
        noises: optional ``k`` uniform draws ``[B, C, H, W]`` behind ``u`` (e.g. hashed per image).
    Returns:
        ``[B]`` bits per dimension (float64 when ``k > 1``): an upper bound on ``-log2 P(x_int) / D``
        in expectation. Differentiable for ``k = 1``.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (dequantisation draws per image) must be a positive integer, got {k!r}")
    if noises is not None and len(noises) != k:
        raise ValueError(f"pass one noise tensor per draw: k={k}, got {len(noises)}")
    num_dims = x_int[0].numel()
    log_probs, log_qs = [], []
    for j in range(k):
        x_tilde, log_q = dequantizer.dequantize(x_int, None if noises is None else noises[j])
        log_probs.append(log_prob_fn(x_tilde))
        log_qs.append(log_q)
    if k == 1:
        return variational_bits_per_dim(log_probs[0], log_qs[0], num_dims, dequantizer.n_bits)
    return importance_weighted_bits_per_dim(torch.stack(log_probs), torch.stack(log_qs), num_dims,
                                            dequantizer.n_bits)
