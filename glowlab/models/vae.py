"""A VAE whose approximate posterior is a flow (Rezende & Mohamed 2015; Kingma et al. 2016).

Model: ``p(z) = N(0, I)`` over ``latent_features``, ``p(x | z)`` a decoder MLP giving independent
Bernoulli pixels (binarised images) or discretised logistics (integer pixels). Posterior: an
encoder MLP gives ``h(x)``; ``q(z | x)`` is a :class:`~glowlab.vi.VariationalFlow` amortised on
``h``: ``N(μ(h), σ(h)²)`` pushed through ``length`` planar / radial / affine-coupling / IAF layers
whose parameters also depend on ``h`` (``posterior="diagonal"`` keeps the Gaussian alone).

Quantities (nats per image):

* :meth:`FlowVAE.elbo`: ``log p(x|z) + log p(z) − log q(z|x)`` at one ``z ~ q(z|x)``, a *lower
  bound* on ``log p(x)`` in expectation (one-sample Monte-Carlo estimate of the bound).
* :meth:`FlowVAE.iwae`: ``log (1/k) Σᵢ p(x, zᵢ) / q(zᵢ|x)``, an *estimate* of ``log p(x)``, biased
  low and tightening as ``k`` grows (Burda et al. 2016), with the delta-method standard error of
  the log-mean weight ``sqrt((k Σ ω̃ᵢ² − 1) / (k − 1))`` (``ω̃`` the normalised weights).

Data: a uint8 batch from :class:`glowlab.data.FlowDataModule` goes in as it is. For
``likelihood="bernoulli"`` it is binarised *statically* at ``x / pixel_max > 0.5`` (the same
image gives the same binary image every epoch); ``pixel_max`` defaults to ``2**n_bits − 1``
(scikit-learn's digits: 16).

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    D. P. Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
    Y. Burda, R. Grosse and R. Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    T. Salimans et al., "PixelCNN++", ICLR 2017 (the discretised logistic).

Example:
    >>> import torch
    >>> from glowlab.models.vae import FlowVAE
    >>> vae = FlowVAE((1, 8, 8), latent_features=4, hidden_features=16, posterior="planar", length=2, n_bits=5)
    >>> x = torch.randint(0, 32, (3, 1, 8, 8), dtype=torch.uint8)
    >>> tuple(vae.elbo(x).shape), tuple(vae.iwae(x, k=10).log_px.shape)
    ((3,), (3,))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from glowlab.core import StandardNormal
from glowlab.vi import FLOWS, VariationalFlow

__all__ = ["LIKELIHOODS", "FlowVAE", "IWAEEstimate", "discretized_logistic_log_prob"]

LIKELIHOODS = ("bernoulli", "logistic")


class IWAEEstimate(NamedTuple):
    """An importance-weighted *estimate* of ``log p(x)`` (nats per image, ``[B]`` each)."""

    log_px: torch.Tensor  # log (1/k) Σ w_i
    stderr: torch.Tensor  # delta-method standard error of log_px over the k draws
    ess: torch.Tensor  # effective sample size 1 / Σ ω̃_i², in [1, k]


def discretized_logistic_log_prob(x_int: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor,
                                  n_bins: int) -> torch.Tensor:
    """``log P(x_int)`` per element (nats) under a logistic on ``[−1, 1]`` discretised to ``n_bins``
    equal bins, the outer bins taking the tails: ``x = 2 x_int / (n_bins − 1) − 1``, half-width
    ``δ = 1 / (n_bins − 1)``, ``P = σ((x + δ − μ)/s) − σ((x − δ − μ)/s)``.
    """
    x = 2 * x_int.to(loc.dtype) / (n_bins - 1) - 1
    inv_s = torch.exp(-log_scale)
    upper = (x + 1 / (n_bins - 1) - loc) * inv_s
    lower = (x - 1 / (n_bins - 1) - loc) * inv_s
    # σ(u) − σ(l) = σ(−l) − σ(−u): use the side where both are small, to avoid cancellation
    flip = (upper + lower) > 0
    a = torch.where(flip, -lower, upper)
    b = torch.where(flip, -upper, lower)
    log_a = F.logsigmoid(a)
    interior = log_a + torch.log(-torch.expm1((F.logsigmoid(b) - log_a).clamp(max=-1e-12)))
    first = F.logsigmoid(upper)  # x_int = 0 takes (−∞, upper]
    last = F.logsigmoid(-lower)  # x_int = n_bins − 1 takes [lower, ∞)
    return torch.where(x_int == 0, first, torch.where(x_int == n_bins - 1, last, interior))


def _mlp(sizes: Sequence[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class FlowVAE(nn.Module):
    """VAE with a flow posterior (see the module docstring).

    Not a :class:`~glowlab.core.Density` (its ``log p(x)`` has no closed form: :meth:`elbo` bounds it
    and :meth:`iwae` estimates it), but it declares its context as densities do: none.

    Args:
        image_shape: ``(C, H, W)`` of the images.
        latent_features: dimension of ``z``.
        hidden_features, hidden_layers: encoder and decoder MLPs (ELU); the encoder's last hidden
            layer is the context ``h`` the posterior is amortised on.
        posterior: ``"diagonal"`` or a flow of :data:`glowlab.vi.FLOWS`.
        length: number of flow layers ``K`` (ignored for ``"diagonal"``).
        flow_hidden_features: hidden width of coupling / IAF networks.
        likelihood: ``"bernoulli"`` (binarised pixels) or ``"logistic"`` (discretised, ``2**n_bits`` bins).
        n_bits: bits per pixel of the integer data.
        pixel_max: the data's largest pixel value (binarisation threshold ``pixel_max / 2``).
    """

    num_classes: int = 0
    context_features: int = 0
    context_kind: str | None = None

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_features: int = 32,
                 hidden_features: int = 300, hidden_layers: int = 2, posterior: str = "planar", length: int = 8,
                 flow_hidden_features: int = 128, likelihood: str = "bernoulli", n_bits: int = 8,
                 pixel_max: int | None = None):
        super().__init__()
        if posterior not in FLOWS:
            raise ValueError(f"posterior must be one of {FLOWS}, got {posterior!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if len(tuple(image_shape)) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be >= 1 (the encoder's last one is the posterior's context), "
                             f"got {hidden_layers}")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_pixels = math.prod(self.image_shape)
        self.latent_features, self.likelihood, self.n_bits = latent_features, likelihood, n_bits
        self.pixel_max = (2 ** n_bits - 1) if pixel_max is None else int(pixel_max)
        widths = [self.num_pixels] + [hidden_features] * hidden_layers
        self.encoder = _mlp(widths, last_activation=True)
        self.posterior = VariationalFlow(latent_features, posterior, 0 if posterior == "diagonal" else length,
                                         context_features=hidden_features, hidden_features=flow_hidden_features)
        out = self.num_pixels * (1 if likelihood == "bernoulli" else 2)
        self.decoder = _mlp([latent_features] + [hidden_features] * hidden_layers + [out], last_activation=False)
        self.prior = StandardNormal((latent_features,))

    # -- data ------------------------------------------------------------------------------------
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """The observed ``[B, C·H·W]``: binary floats (Bernoulli) or integer bins (logistic).
        uint8/integer input is converted; float input is taken as already prepared."""
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"FlowVAE was built for images of shape {self.image_shape}, got {tuple(x.shape)}")
        flat = x.flatten(1)
        if flat.is_floating_point():
            return flat
        if self.likelihood == "bernoulli":
            return (flat.float() / self.pixel_max > 0.5).to(self._dtype())
        return flat.long()

    def _dtype(self) -> torch.dtype:
        return self.decoder[0].weight.dtype

    def _encoder_input(self, target: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return target.to(self._dtype())
        return target.to(self._dtype()) / self.pixel_max * 2 - 1

    def log_likelihood(self, target: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` summed over pixels, ``[N]`` nats (``target`` and ``z`` have ``N`` rows)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, target.to(out.dtype), reduction="none").sum(1)
        loc, log_scale = out.chunk(2, dim=1)
        return discretized_logistic_log_prob(target, torch.tanh(loc), log_scale.clamp(min=-7.0),
                                             2 ** self.n_bits).sum(1)

    # -- bounds and estimates --------------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One ``z ~ q(z|x)`` per image: ``log_px_given_z``, ``log_pz``, ``log_qz``, each ``[B]`` nats."""
        target = self.targets(x)
        h = self.encoder(self._encoder_input(target))
        z, log_qz = self.posterior.rsample_and_log_prob(target.shape[0], context=h)
        return {"log_px_given_z": self.log_likelihood(target, z), "log_pz": self.prior.log_prob(z), "log_qz": log_qz}

    def elbo(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """Per-image ELBO ``[B]`` (nats): a one-sample estimate of a *lower bound* on ``log p(x)``.
        ``context`` is accepted for the objectives' interface; the model is unconditional and ignores it."""
        t = self.elbo_terms(x)
        return t["log_px_given_z"] + t["log_pz"] - t["log_qz"]

    @torch.no_grad()
    def iwae(self, x: torch.Tensor, k: int = 1000, chunk: int = 100, context=None) -> IWAEEstimate:
        """Importance-weighted *estimate* of ``log p(x)`` from ``k`` draws of ``q(z|x)`` per image,
        computed ``chunk`` draws at a time (see :class:`IWAEEstimate`). ``k = 1`` is the ELBO."""
        if k < 1 or chunk < 1:
            raise ValueError(f"k and chunk must be positive, got k={k}, chunk={chunk}")
        target = self.targets(x)
        h = self.encoder(self._encoder_input(target))
        b = target.shape[0]
        log_w = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            t_rep, h_rep = target.repeat(m, 1), h.repeat(m, 1)  # draw-major: row j*b + i is image i
            z, log_qz = self.posterior.rsample_and_log_prob(m * b, context=h_rep)
            lw = self.log_likelihood(t_rep, z) + self.prior.log_prob(z) - log_qz
            log_w.append(lw.view(m, b).double())
        log_w = torch.cat(log_w)  # [k, B]
        total = torch.logsumexp(log_w, 0)
        omega_sq = torch.exp(2 * (log_w - total)).sum(0)
        stderr = torch.sqrt(((k * omega_sq - 1) / (k - 1)).clamp(min=0)) if k > 1 else torch.full_like(total, math.nan)
        return IWAEEstimate(total - math.log(k), stderr, 1 / omega_sq)

    @torch.no_grad()
    def sample(self, n: int, context=None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``[n, C, H, W]`` from the prior through the decoder (``z ~ N(0, T² I)``), as
        the decoder's mean (Bernoulli probabilities, or the logistic's location mapped to
        ``[0, 1]``) minus 0.5: the image models' convention ``[−0.5, 0.5]``, so that
        :func:`glowlab.likelihood.to_image` and ``sample.py`` display them. ``context`` is ignored."""
        anchor = next(self.parameters())
        z = torch.randn(n, self.latent_features, device=anchor.device, dtype=anchor.dtype, generator=generator)
        out = self.decoder(z * temperature)
        img = torch.sigmoid(out) if self.likelihood == "bernoulli" else (torch.tanh(out.chunk(2, 1)[0]) + 1) / 2
        return img.view(n, *self.image_shape) - 0.5
