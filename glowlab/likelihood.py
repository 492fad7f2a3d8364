"""Dequantisation and bits/dim: the one place where likelihood units are defined.

Conventions (as in the Glow paper and its official code):

* An image has integer pixels ``x_int`` in ``[0, 2**n_bits)``, shape ``[B, C, H, W]``.
* The model sees the dequantised, centred value
  ``x~ = x_int / 2**n - 0.5 + u / 2**n`` with ``u ~ U(0, 1)`` per dimension, so ``x~`` lies in
  ``[-0.5, 0.5)``.
* A flow gives a density ``p(x~)`` over the continuous cube; the discrete model is
  ``P(x_int) = integral of p over the bin of x_int``.

Derivation of bits/dim. Each bin of the continuous cube has side ``1 / 2**n``, hence volume
``2**(-n D)`` for ``D = C * H * W`` dimensions. A density p on the cube gives the discrete
probability ``P(x_int) = ∫_bin p(x~) dx~ = 2**(-n D) E_u[p(x~)]``, so by Jensen

    -log P(x_int) <= -E_u[log p(x~)] + n D log 2     (nats per image)

and, dividing by ``D log 2``, the bits per dimension

    bpd = (-log p(x~) + D * n * log 2) / (D * log 2).

This is the quantity the Glow (3.35 on CIFAR-10) and RealNVP (3.49) papers report on the test set,
evaluated with one dequantisation draw per image. A bpd at 5 bits is not comparable with one at
8 bits, and neither is one over 28x28x1 MNIST with one over MNIST padded to 32x32x3.

Variational dequantisation (Flow++). Replace the uniform ``u`` by a draw from a learned density
``q(u | x_int)`` on ``(0, 1)^D`` (:mod:`glowlab.data.dequantization`). Importance sampling with
proposal ``q`` writes the same bin integral as

    P(x_int) = ∫_(0,1)^D p(x~(u)) 2**(-n D) du = E_q[ p(x~(u)) 2**(-n D) / q(u | x_int) ],

with ``x~(u) = (x_int + u) / 2**n - 0.5`` (the change of variables from ``x~`` to ``u`` has
Jacobian ``2**(-n D)``), so by Jensen

    -log P(x_int) <= E_q[-log p(x~) + log q(u | x_int)] + n D log 2     (nats per image),

an upper bound whose gap is ``KL(q(u | x_int) || p(u | x_int))``, the divergence from the
model's own distribution of ``u`` within the bin. :func:`variational_bits_per_dim` is this bound per
dimension in bits; ``q = U(0, 1)^D`` (``log q = 0``) gives back :func:`bits_per_dim`. With ``k``
draws ``u_1..u_k ~ q``, ``log((1/k) Σ_j p(x~_j) 2**(-n D) / q(u_j | x_int))`` is a lower bound on
``log P(x_int)`` in expectation that tightens as ``k`` grows (Burda et al., "Importance Weighted
Autoencoders", 2016): :func:`importance_weighted_bits_per_dim`. Train, validation and test bpd
computed this way all stay upper bounds on the discrete negative log-likelihood.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "bits_per_dim",
    "dequantize",
    "hashed_uniform",
    "importance_weighted_bits_per_dim",
    "nats_to_bpd_offset",
    "reduce_bits",
    "to_image",
    "variational_bits_per_dim",
]

_MASK64 = (1 << 64) - 1


def _i64(c: int) -> int:
    """An unsigned 64-bit constant as the signed int64 torch stores."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _splitmix64(z: torch.Tensor) -> torch.Tensor:
    z = z + _i64(0x9E3779B97F4A7C15)
    z = (z ^ _shr(z, 30)) * _i64(0xBF58476D1CE4E5B9)
    z = (z ^ _shr(z, 27)) * _i64(0x94D049BB133111EB)
    return z ^ _shr(z, 31)


def _check_n_bits(n_bits: int) -> None:
    if not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be an integer from 1 to 8, got {n_bits!r}")


def reduce_bits(x_uint8: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Map 8-bit pixels ``[0, 255]`` to ``n_bits`` integers ``[0, 2**n_bits)`` by dropping low bits.

    Returns an integer tensor of the same shape (``torch.long``).
    """
    _check_n_bits(n_bits)
    x = x_uint8.long()
    if x.numel() and (x.min() < 0 or x.max() > 255):
        raise ValueError(
            f"expected 8-bit pixels in [0, 255], got range [{int(x.min())}, {int(x.max())}]"
        )
    return torch.div(x, 2 ** (8 - n_bits), rounding_mode="floor")


def hashed_uniform(x_int: torch.Tensor, seed: int) -> torch.Tensor:
    """Deterministic noise in [0, 1), a hash of ``(seed, image content, position)``.

    ``x_int`` is ``[B, ...]`` integer images; the result has its shape, float32. An image gets the
    same noise whatever batch, process or device it is evaluated in, so evaluation bits/dim does
    not depend on the batch size or on how DDP shards the data (splitmix64 in int64 arithmetic).
    """
    flat = x_int.reshape(x_int.shape[0], -1).long()
    d = flat.shape[1]
    g = torch.Generator().manual_seed(int(seed) & 0x7FFFFFFFFFFFFFFF)
    weights = torch.randint(-(1 << 62), 1 << 62, (d,), generator=g).to(flat.device)
    image_key = _splitmix64((flat * weights).sum(1) + int(seed))
    pos = torch.arange(d, device=flat.device) * _i64(0xD1B54A32D192ED03)
    z = _splitmix64(_splitmix64(image_key[:, None] ^ pos[None, :]))
    return (_shr(z, 40).float() / float(1 << 24)).reshape(x_int.shape)


def dequantize(
    x_int: torch.Tensor,
    n_bits: int,
    noise: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
) -> torch.Tensor:
    """Uniform dequantisation: ``x~ = x_int / 2**n - 0.5 + u / 2**n``, ``u ~ U(0,1)``.

    Args:
        x_int: integer pixels in ``[0, 2**n_bits)``, any shape.
        n_bits: bits per pixel, 1 to 8.
        noise: if False, use ``u = 0.5`` (the bin centre).
        generator: RNG for ``u`` (its device may differ from ``x_int``'s).
        seed: if given, ``u = hashed_uniform(x_int, seed)``: uniform-looking but a fixed function
            of each image, for evaluation that is reproducible across batchings and processes.
    Returns:
        A float tensor of the same shape in ``[-0.5, 0.5)``.
    """
    _check_n_bits(n_bits)
    n_bins = 2**n_bits
    x = x_int.to(dtype)
    if x.numel() and (x.min() < 0 or x.max() >= n_bins):
        raise ValueError(
            f"pixels must lie in [0, {n_bins}) for n_bits={n_bits}, got range "
            f"[{x.min().item():g}, {x.max().item():g}]; reduce 8-bit data with reduce_bits first"
        )
    if noise and seed is not None:
        u = hashed_uniform(x_int, seed).to(dtype)
    elif noise:
        device = generator.device if generator is not None else x.device
        u = torch.rand(x.shape, generator=generator, dtype=dtype, device=device).to(x.device)
    else:
        u = torch.full_like(x, 0.5)
    x_tilde = (x + u) / n_bins - 0.5
    # In float32, x + u rounds up to x + 1 when u is within ~2**-17 of 1, which would put x~ on the
    # lower edge of the next bin (or at 0.5): keep every value strictly inside its own bin.
    upper = (x + 1) / n_bins - 0.5
    return torch.minimum(x_tilde, torch.nextafter(upper, torch.full_like(upper, -1.0)))


def nats_to_bpd_offset(num_dims: int, n_bits: int) -> float:
    """The constant ``D * n * log 2`` (nats per image) added to ``-log p(x~)`` for discrete data."""
    _check_n_bits(n_bits)
    return num_dims * n_bits * math.log(2.0)


def bits_per_dim(log_prob: torch.Tensor, num_dims: int, n_bits: int) -> torch.Tensor:
    """Bits per dimension of discrete images from the continuous log-density of their dequantised
    version.

    Args:
        log_prob: ``log p(x~)`` in nats per image, shape ``[B]`` (any shape works elementwise).
        num_dims: ``D = C * H * W`` of one image.
        n_bits: bits per pixel of the data the model was trained on.
    Returns:
        bpd per image, same shape as ``log_prob``, in float32 or wider:
        ``(-log p(x~) + D * n * log 2) / (D * log 2)``.
    """
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    lp = log_prob.float() if log_prob.dtype in (torch.float16, torch.bfloat16) else log_prob
    return (-lp + nats_to_bpd_offset(num_dims, n_bits)) / (num_dims * math.log(2.0))


def to_image(x_tilde: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Inverse preprocessing for display: map model space ``[-0.5, 0.5)`` to image values in [0, 1].

    The value is quantised back to the ``2**n_bits`` levels the data had, then scaled so the
    largest level is 1.0. Non-finite values stay non-finite so callers can count them.
    """
    _check_n_bits(n_bits)
    n_bins = 2**n_bits
    levels = torch.floor((x_tilde.float() + 0.5) * n_bins).clamp(0, n_bins - 1)
    levels = torch.where(torch.isfinite(x_tilde), levels, x_tilde.float())
    return levels / (n_bins - 1)


def variational_bits_per_dim(log_prob: torch.Tensor, log_q: torch.Tensor, num_dims: int,
                             n_bits: int) -> torch.Tensor:
    """Bits/dim bound of variational dequantisation (see the module docstring), for one draw
    ``u ~ q(u | x_int)`` per image.

    Args:
        log_prob: ``log p(x~)`` in nats per image, ``[B]``, at ``x~ = (x_int + u) / 2**n - 0.5``.
        log_q: ``log q(u | x_int)`` in nats per image, ``[B]`` (0 for uniform dequantisation).
        num_dims: ``D = C * H * W``.
        n_bits: bits per pixel.
    Returns:
        ``[B]``: ``(-log p(x~) + log q(u | x_int) + D n log 2) / (D log 2)``, an upper bound on
        ``-log2 P(x_int) / D`` in expectation over ``q``.

    Example:
        >>> lp = torch.tensor([-100.0, -90.0])
        >>> bool(torch.equal(variational_bits_per_dim(lp, torch.zeros(2), 64, 8), bits_per_dim(lp, 64, 8)))
        True
    """
    if log_q.shape != log_prob.shape:
        raise ValueError(f"log_q must have the shape of log_prob {tuple(log_prob.shape)}, got {tuple(log_q.shape)}")
    lq = log_q.float() if log_q.dtype in (torch.float16, torch.bfloat16) else log_q
    return bits_per_dim(log_prob - lq, num_dims, n_bits)


def importance_weighted_bits_per_dim(log_prob: torch.Tensor, log_q: torch.Tensor, num_dims: int,
                                     n_bits: int) -> torch.Tensor:
    """Importance-weighted bits/dim bound from ``k`` draws per image (see the module docstring).

    Args:
        log_prob: ``log p(x~_j)`` ``[k, B]`` nats, draw ``j`` of image ``b`` in ``[j, b]``.
        log_q: ``log q(u_j | x_int)`` ``[k, B]`` nats (zeros for uniform dequantisation).
        num_dims, n_bits: as in :func:`bits_per_dim`.
    Returns:
        ``[B]`` in float64: ``-(logmeanexp_j(log p(x~_j) - log q(u_j | x_int)) - D n log 2) / (D log 2)``.
        ``k = 1`` equals :func:`variational_bits_per_dim`; the bound tightens as ``k`` grows.

    Example:
        >>> lp, lq = torch.randn(16, 3) - 50, torch.randn(16, 3)
        >>> iw = importance_weighted_bits_per_dim(lp, lq, 4, 8)
        >>> bool((iw <= variational_bits_per_dim(lp, lq, 4, 8).double().mean(0)).all())  # Jensen
        True
    """
    if log_prob.dim() != 2 or log_q.shape != log_prob.shape:
        raise ValueError(f"log_prob and log_q must both be [k, B], got shapes {tuple(log_prob.shape)} and "
                         f"{tuple(log_q.shape)}")
    log_w = log_prob.double() - log_q.double()
    log_mean = torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
    return bits_per_dim(log_mean, num_dims, n_bits)
