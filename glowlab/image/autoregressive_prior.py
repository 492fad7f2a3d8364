"""Autoregressive options for multiscale models (Glow): a prior on the top latent, or a step per level.

Glow's top prior is a diagonal Gaussian: the top latent's elements are independent given the
context. :class:`AutoregressivePrior` replaces it with a small MAF over the top latent
``[C, H, W]``: ``layers`` masked autoregressive layers (PixelCNN-style masked convolutions,
alternating raster orders) pushing a standard normal, so each element of the top latent is
conditioned on the ones before it.

* ``log_prob(z, context)``: one network pass per layer, ``[B]`` nats;
* ``sample``: sequential, ``C·H·W`` passes per layer (e.g. 8x7x7 = 392 for Glow on 1x28x28 with
  2 levels): cheap next to the image itself, since the top latent is small.

:func:`glow_with_autoregressive_prior` builds a :class:`~glowlab.models.Glow` with this prior (a
Hydra ``_target_``). The alternative, :func:`glow_with_autoregressive_steps`, appends one masked
autoregressive layer to every level of a Glow instead (its sampling is then sequential at every
level, ``C·H·W`` passes at each level's resolution). ``scripts/bench_autoregressive.py --libs
glow,glow_ar,glow_arstep`` compares the two on the digits.

Example:
    >>> import torch
    >>> prior = AutoregressivePrior((2, 3, 3), layers=2, hidden_features=8)
    >>> z = prior.sample(4, temperature=0.7)
    >>> prior.log_prob(z).shape
    torch.Size([4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from glowlab.core import Compose, StandardNormal
from glowlab.core.context import ContextEmbedding
from glowlab.image.priors import LatentPrior
from glowlab.layers.autoregressive import MaskedAutoregressive

__all__ = ["AutoregressivePrior", "glow_with_autoregressive_prior", "glow_with_autoregressive_steps"]


class AutoregressivePrior(LatentPrior):
    """``z [B, C, H, W]`` with ``log p(z) = log N(f(z); 0, I) + log|det ∂f/∂z|``, ``f`` a stack of
    masked autoregressive layers (see the module docstring).

    Args:
        shape: ``(C, H, W)`` of the top latent.
        layers, hidden_features, hidden_layers, kernel_size, transformer: as for
            :class:`~glowlab.layers.autoregressive.MaskedAutoregressive` (masked convolutions).
        num_classes, context_features: conditional on a label or a tensor, through a
            :class:`~glowlab.core.context.ContextEmbedding` of ``embedding_features``.

    Temperature scales the standard normal before the sequential inverse, as Glow's temperature
    scales its prior's standard deviation. Zero-initialised layers make it start as ``N(0, I)``.
    """

    def __init__(self, shape: Sequence[int], layers: int = 2, hidden_features: int = 64, hidden_layers: int = 2,
                 kernel_size: int = 3, transformer: str = "affine", num_classes: int = 0, context_features: int = 0,
                 embedding_features: int = 16):
        super().__init__()
        self.shape = self.event_shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise ValueError(f"AutoregressivePrior is a prior over [C, H, W] latents, got shape {shape!r}")
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        self.num_classes, self.context_features = num_classes, context_features
        self.embedding = (ContextEmbedding(num_classes, context_features, embedding_features, owner="this prior")
                          if num_classes or context_features else None)
        k = self.embedding.features if self.embedding is not None else 0
        self.transform = Compose([
            MaskedAutoregressive(self.shape, hidden_features, hidden_layers, transformer,
                                 order=("identity", "reversed")[i % 2], context_features=k, kernel_size=kernel_size)
            for i in range(layers)
        ])
        self.base = StandardNormal(self.shape)

    def _context(self, context, n: int):
        return self.embedding(context, n) if self.embedding is not None else None

    def log_prob(self, z: torch.Tensor, context=None) -> torch.Tensor:
        """``log p(z | context)``, ``[B]`` nats, computed in float32 or wider."""
        u, ladj = self.transform(z, self._context(context, z.shape[0]))
        return self.base.log_prob(u) + ladj

    def _draw(self, n, context, temperature, device, dtype, generator):
        u = torch.randn((n, *self.shape), generator=generator, device=device, dtype=dtype) * temperature
        return self.transform.inverse(u, self._context(context, n))[0]


def glow_with_autoregressive_prior(prior_layers: int = 2, prior_hidden_features: int = 64,
                                   prior_hidden_layers: int = 2, **glow_kwargs):
    """A :class:`~glowlab.models.Glow` (built from ``glow_kwargs``) whose top prior is an
    :class:`AutoregressivePrior` of ``prior_layers`` layers, conditional like the Glow it replaces
    (``num_classes`` / ``context_features``)."""
    from glowlab.models import Glow

    model = Glow(**glow_kwargs)
    old = model.top_prior
    model.top_prior = AutoregressivePrior(old.shape, prior_layers, prior_hidden_features, prior_hidden_layers,
                                          num_classes=old.num_classes, context_features=old.context_features)
    return model


def glow_with_autoregressive_steps(step_hidden_features: int = 32, step_hidden_layers: int = 2, **glow_kwargs):
    """A :class:`~glowlab.models.Glow` (built from ``glow_kwargs``) with one
    :class:`~glowlab.layers.autoregressive.MaskedAutoregressive` (masked convolutions, raster order
    reversed every other level) appended to every level, after its ``depth`` coupling steps.
    Unconditional steps: the Glow's context still reaches its couplings and top prior."""
    from glowlab.execution.memory_saving import MemorySavingSequence
    from glowlab.image.split import Split
    from glowlab.models import Glow

    model = Glow(**glow_kwargs)
    c, h, w = model.image_shape
    for i, (level, split) in enumerate(zip(model.levels, model.splits)):
        c, h, w = 4 * c, h // 2, w // 2
        step = MaskedAutoregressive((c, h, w), step_hidden_features, step_hidden_layers,
                                    order=("identity", "reversed")[i % 2])
        model.levels[i] = MemorySavingSequence([*level.flows, step], level.memory_saving, [*level.segments, 1])
        if isinstance(split, Split):
            c = split.h_channels
    return model
