"""Glow (Kingma & Dhariwal, 2018): multiscale actnorm / 1x1 conv / coupling steps."""

from __future__ import annotations

from glowlab.execution.memory_saving import MemorySavingSequence, check_memory_saving
from glowlab.image import LearnedPrior, Split, Squeeze
from glowlab.image.multiscale import MultiscaleFlow, check_divisible
from glowlab.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    InvConv1x1,
    InvConv1x1LU,
    Reverse,
    Shuffle,
)
from glowlab.layers.coupling.mixture import MixtureCoupling
from glowlab.layers.coupling.spline import SplineCoupling
from glowlab.models.context import coupling_context

__all__ = ["Glow"]

PERMUTATIONS = {"lu": InvConv1x1LU, "invconv": InvConv1x1, "reverse": lambda c: Reverse(), "shuffle": Shuffle}
COUPLINGS = {"affine": AffineCoupling, "additive": AdditiveCoupling, "spline": SplineCoupling,
             "mixture": MixtureCoupling}


class Glow(MultiscaleFlow):
    """Glow: ``levels`` levels of (squeeze, ``depth`` x [actnorm, permutation, coupling], split).

    Args:
        image_shape: ``(C, H, W)``; H and W must be divisible by ``2**levels``.
        levels: L, the number of scales.
        depth: K, flow steps per level.
        hidden_channels: width of each coupling network (512 in the paper).
        coupling: ``"affine"``, ``"additive"``, ``"spline"`` (rational-quadratic, Durkan et al. 2019) or
            ``"mixture"`` (Flow++'s logistic-mixture CDF, numerical inverse).
        coupling_kwargs: extra arguments of the coupling class (e.g. ``bins``/``bound`` for splines,
            ``components`` for mixtures).
        permutation: ``"lu"`` (LU 1x1 conv), ``"invconv"`` (plain 1x1 conv), ``"reverse"`` or ``"shuffle"``.
        learn_top: learned mean/log-std of the top prior (else N(0, I)).
        num_classes: > 0 makes the model class-conditional: pass labels ``[B]`` as ``context``. It
            also gets a linear classifier on the top latent (:meth:`class_logits`).
        context_features: > 0 (and ``num_classes=0``): conditional on a float tensor ``[B, F]``.
        condition_couplings: a conditional model also feeds the context, through a learned
            embedding of ``context_channels`` features, to every coupling network (else only the
            top prior sees it, as in glowlab 0.1).
        context_channels: K, the width of that embedding.
        actnorm_in_coupling: ActNorm inside the coupling networks, as in the paper's code.
        memory_saving: ``"none"`` (plain autograd), ``"checkpoint"`` (``torch.utils.checkpoint``
            per flow step) or ``"reversible"`` (no stored activations: each step's input is
            reconstructed by its inverse in the backward pass). Both saving modes cost about one
            extra forward pass and give the same gradients; see :mod:`glowlab.execution.memory_saving`.

    Example:
        >>> import torch
        >>> m = Glow(image_shape=(1, 8, 8), levels=2, depth=2, hidden_channels=16)
        >>> zs, logdet = m(torch.rand(3, 1, 8, 8) - 0.5)
        >>> [tuple(z.shape) for z in zs], tuple(logdet.shape)
        ([(3, 2, 4, 4), (3, 8, 2, 2)], (3,))
        >>> m.sample(2, temperature=0.7).shape
        torch.Size([2, 1, 8, 8])

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    def __init__(self, image_shape=(3, 32, 32), levels: int = 3, depth: int = 32,
                 hidden_channels: int = 512, coupling: str = "affine", permutation: str = "lu",
                 learn_top: bool = True, num_classes: int = 0, actnorm_in_coupling: bool = True,
                 memory_saving: str = "none", context_features: int = 0, condition_couplings: bool = True,
                 context_channels: int = 16, coupling_kwargs: dict | None = None):
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {sorted(COUPLINGS)}, got {coupling!r}")
        if permutation not in PERMUTATIONS:
            raise ValueError(f"permutation must be one of {sorted(PERMUTATIONS)}, got {permutation!r}")
        check_memory_saving(memory_saving)
        c, h, w = check_divisible(image_shape, levels, f"Glow with levels={levels}")
        embedding = coupling_context(num_classes, context_features, condition_couplings, context_channels)
        k = embedding.features if embedding is not None else 0
        flows, splits = [], []
        for level in range(levels):
            c, h, w = 4 * c, h // 2, w // 2
            steps = [Squeeze()]
            for _ in range(depth):
                steps += [ActNorm(c), PERMUTATIONS[permutation](c),
                          COUPLINGS[coupling](c, hidden_channels, actnorm=actnorm_in_coupling, cond_channels=k,
                                              **(coupling_kwargs or {}))]
            flows.append(MemorySavingSequence(steps, memory_saving, segments=[1] + [3] * depth))
            if level < levels - 1:
                split = Split(c)
                splits.append(split)
                c = split.h_channels
            else:
                splits.append(None)
        super().__init__(image_shape, flows, splits, LearnedPrior((c, h, w), learn_top, num_classes, context_features),
                         embedding)
        self.config = dict(levels=levels, depth=depth, hidden_channels=hidden_channels,
                           coupling=coupling, permutation=permutation, memory_saving=memory_saving,
                           condition_couplings=embedding is not None)
