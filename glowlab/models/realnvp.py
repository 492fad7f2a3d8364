"""RealNVP (Dinh et al., 2017): checkerboard and channel-mask affine couplings, multiscale."""

from __future__ import annotations

from glowlab.execution.memory_saving import MemorySavingSequence, check_memory_saving
from glowlab.image import LearnedPrior, Split, Squeeze
from glowlab.image.multiscale import MultiscaleFlow, check_divisible
from glowlab.layers import ActNorm, AffineCoupling
from glowlab.models.context import coupling_context

__all__ = ["RealNVP"]


class RealNVP(MultiscaleFlow):
    """RealNVP: each level but the last is 3 checkerboard couplings, a squeeze, 3 channel-mask
    couplings and a split; the last level is 4 checkerboard couplings. Masks alternate parity.

    Couplings use residual networks (``num_blocks`` blocks of ``hidden_channels``) and RealNVP's
    ``log s = scale * tanh(.)``. Each coupling is preceded by an ActNorm, which stands in for the
    paper's batch normalisation (same role, no batch dependence at test time).

    Args:
        image_shape: ``(C, H, W)``; H and W divisible by ``2**(levels - 1)``.
        levels: number of scales (the paper uses 3 on CIFAR-10).
        hidden_channels, num_blocks: the residual coupling networks (64 and 8 in the paper).
        num_classes: > 0 makes the model class-conditional (labels ``[B]`` as ``context``), with a
            classifier on the top latent; ``context_features`` > 0: conditional on a tensor ``[B, F]``.
        condition_couplings, context_channels: as for :class:`~glowlab.models.Glow`.
        memory_saving: ``"none"``, ``"checkpoint"`` or ``"reversible"``, as for
            :class:`~glowlab.models.Glow` (see :mod:`glowlab.execution.memory_saving`).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    def __init__(self, image_shape=(3, 32, 32), levels: int = 3, hidden_channels: int = 64,
                 num_blocks: int = 4, learn_top: bool = False, num_classes: int = 0,
                 memory_saving: str = "none", context_features: int = 0, condition_couplings: bool = True,
                 context_channels: int = 16):
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels!r}")
        check_memory_saving(memory_saving)
        c, h, w = check_divisible(image_shape, levels - 1, f"RealNVP with levels={levels}", levels_offset=1)
        embedding = coupling_context(num_classes, context_features, condition_couplings, context_channels)
        k = embedding.features if embedding is not None else 0

        def sequence(steps):  # checkpoint segments: (actnorm, coupling) pairs and the squeeze
            segments = [1 if len(list(f.parameters())) == 0 else 2 for f in steps if not isinstance(f, ActNorm)]
            return MemorySavingSequence(steps, memory_saving, segments)

        def coupling(channels: int, mask: str, parity: int):
            return [ActNorm(channels),
                    AffineCoupling(channels, hidden_channels, mask=mask, parity=parity, net="resnet",
                                   num_blocks=num_blocks, scale_fn="tanh", cond_channels=k)]

        flows, splits = [], []
        for level in range(levels):
            if level == levels - 1:
                steps = [f for p in (0, 1, 0, 1) for f in coupling(c, "checkerboard", p)]
                flows.append(sequence(steps))
                splits.append(None)
                break
            steps = [f for p in (0, 1, 0) for f in coupling(c, "checkerboard", p)]
            c, h, w = 4 * c, h // 2, w // 2
            steps.append(Squeeze())
            steps += [f for p in (0, 1, 0) for f in coupling(c, "channel", p)]
            flows.append(sequence(steps))
            split = Split(c)
            splits.append(split)
            c = split.h_channels
        super().__init__(image_shape, flows, splits, LearnedPrior((c, h, w), learn_top, num_classes, context_features),
                         embedding)
        self.config = dict(levels=levels, hidden_channels=hidden_channels, num_blocks=num_blocks,
                           memory_saving=memory_saving, condition_couplings=embedding is not None)
