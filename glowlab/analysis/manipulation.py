"""Semantic manipulation in latent space: attribute directions and edits of real images (Glow, §5.2).

A multiscale flow encodes an image ``x`` into one latent per level, ``z = (z_1, ..., z_L)``
(finest first). For a binary attribute, the **direction** at level ``l`` is the difference of the
mean latents of the images with and without it,

    d_l = mean_{x in with} z_l(x) - mean_{x in without} z_l(x),

and an **edit** encodes an image, moves the latents of the chosen levels along the direction and
decodes:

    x'(alpha) = f^{-1}(z_1 + alpha d_1, ..., z_L + alpha d_L),

so ``alpha = 0`` gives back ``x`` (up to the round-trip error) and ``alpha = 1`` moves an image by
the average latent difference between the two groups. Restricting the edit to some levels leaves
the latents of the others exactly as they were: coarse levels hold the global shape, fine levels
the local texture.

Works for every model with per-level latents (:mod:`glowlab.analysis.latents`: Glow, RealNVP and
NICE; MAF/IAF/FFJORD as one level). Means are accumulated in float64.

References:
    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018,
    section 5.2 ("semantic manipulation") and figure 5.

Example:
    >>> import torch
    >>> from glowlab.models import Glow
    >>> model = Glow(image_shape=(1, 8, 8), levels=2, depth=1, hidden_channels=8).eval()
    >>> bright, dark = torch.rand(6, 1, 8, 8) * 0.5, torch.rand(6, 1, 8, 8) * 0.5 - 0.5
    >>> d = latent_direction(model, bright, dark)
    >>> [tuple(t.shape) for t in d]
    [(2, 4, 4), (8, 2, 2)]
    >>> edits = manipulate(model, dark[:2], d, alphas=[-1.0, 0.0, 1.0])
    >>> tuple(edits.shape)
    (2, 3, 1, 8, 8)
    >>> bool((edits[:, 1] - dark[:2]).abs().max() < 1e-5)  # alpha = 0 reconstructs
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from glowlab.analysis.latents import decode_levels, encode_levels

__all__ = ["LatentMean", "check_levels", "direction_norms", "latent_direction", "manipulate"]


class LatentMean:
    """Running mean of per-level latents over batches, in float64.

    ``add(zs)`` takes a list of ``[B, ...]`` tensors (one per level); ``mean()`` returns the list of
    ``[...]`` means (float64); ``count`` is the number of images added.
    """

    def __init__(self):
        self.sums: list[Tensor] | None = None
        self.count = 0

    def add(self, zs: Sequence[Tensor]) -> None:
        if not len(zs) or zs[0].shape[0] == 0:
            return
        sums = [z.detach().double().sum(0) for z in zs]
        self.sums = sums if self.sums is None else [a + b for a, b in zip(self.sums, sums)]
        self.count += int(zs[0].shape[0])

    def mean(self) -> list[Tensor]:
        if self.sums is None:
            raise ValueError("no images were added, so there is no mean latent")
        return [s / self.count for s in self.sums]


def _batches(x: Tensor, context, batch_size: int) -> Iterable[tuple[Tensor, Tensor | None]]:
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], None if context is None else context[i:i + batch_size]


@torch.no_grad()
def latent_direction(model: nn.Module, images_with: Tensor, images_without: Tensor, context_with: Tensor | None = None,
                     context_without: Tensor | None = None, batch_size: int = 256) -> list[Tensor]:
    """The attribute direction ``d_l = mean z_l(with) - mean z_l(without)`` of every level.

    Args:
        model: a density with per-level latents, in eval mode.
        images_with, images_without: ``[N, C, H, W]`` images in model space (``[-0.5, 0.5)``),
            each set non-empty.
        context_with, context_without: the context of each image (class-conditional models).
        batch_size: images encoded at a time.
    Returns:
        One tensor per level, shaped like that level's latent without the batch dimension, in the
        images' dtype.
    """
    means = []
    for name, x, context in (("images_with", images_with, context_with),
                             ("images_without", images_without, context_without)):
        if len(x) == 0:
            raise ValueError(f"{name} is empty: a direction needs images on both sides of the attribute")
        acc = LatentMean()
        for xb, cb in _batches(x, context, batch_size):
            acc.add(encode_levels(model, xb, cb))
        means.append(acc.mean())
    return [(a - b).to(images_with.dtype) for a, b in zip(*means)]


def direction_norms(direction: Sequence[Tensor]) -> list[float]:
    """The Euclidean norm of the direction at each level (latent units)."""
    return [float(torch.linalg.vector_norm(d.double())) for d in direction]


def check_levels(levels: Sequence[int] | int | None, num_levels: int) -> list[int]:
    """Levels to edit as sorted indices in ``[0, num_levels)`` (0 = finest; negative counts from the
    top: -1 is the top level); None means all. ValueError naming ``levels=`` otherwise."""
    if levels is None:
        return list(range(num_levels))
    if isinstance(levels, int):
        levels = [levels]
    out = set()
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, int) or not -num_levels <= level < num_levels:
            raise ValueError(f"levels= must list level indices from 0 (finest) to {num_levels - 1} (top), or -1 for "
                             f"the top; this model has {num_levels} levels, got levels={list(levels)!r}")
        out.add(level % num_levels)
    if not out:
        raise ValueError("levels= is empty; give at least one level, or null for all")
    return sorted(out)


@torch.no_grad()
def manipulate(model: nn.Module, x: Tensor, direction: Sequence[Tensor], alphas: Sequence[float],
               levels: Sequence[int] | int | None = None, context: Tensor | None = None) -> Tensor:
    """Edit images along an attribute direction.

    Args:
        model: a density with per-level latents, in eval mode.
        x: ``[B, C, H, W]`` images in model space.
        direction: one tensor per level (as :func:`latent_direction` returns).
        alphas: the step sizes; ``0`` reconstructs, ``1`` adds the whole mean difference.
        levels: the levels to edit (see :func:`check_levels`); the others keep their latents.
        context: the images' context (class-conditional models), used to encode and decode.
    Returns:
        ``[B, len(alphas), C, H, W]`` in model space: ``out[:, j] = f^{-1}(z + alphas[j] * d)``.
    """
    zs = encode_levels(model, x, context)
    if len(direction) != len(zs):
        raise ValueError(f"the direction has {len(direction)} levels but the model encodes {len(zs)}; "
                         f"compute it with this model")
    for i, (z, d) in enumerate(zip(zs, direction)):
        if tuple(d.shape) != tuple(z.shape[1:]):
            raise ValueError(f"direction level {i} has shape {tuple(d.shape)}, the model's latent "
                             f"{tuple(z.shape[1:])}; compute the direction with this model")
    edit = set(check_levels(levels, len(zs)))
    frames = []
    for alpha in alphas:
        moved = [z + float(alpha) * d.to(z) if i in edit else z for i, (z, d) in enumerate(zip(zs, direction))]
        frames.append(decode_levels(model, moved, context))
    return torch.stack(frames, dim=1)
