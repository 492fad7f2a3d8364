"""RealNVP (Dinh et al., 2017): checkerboard and channel-mask affine couplings, multiscale."""

from __future__ import annotations

from glowlab.execution.memory_saving import MemorySavingSequence, check_memory_saving
from glowlab.image import LearnedPrior, Split, Squeeze
from glowlab.image.multiscale import MultiscaleFlow, check_divisible
from glowlab.layers import ActNorm, AffineCoupling
from glowlab.layers.coupling.mixture import MixtureCoupling
from glowlab.layers.coupling.spline import SplineCoupling
from glowlab.models.context import coupling_context

__all__ = ["RealNVP"]

COUPLINGS = {"affine": AffineCoupling, "spline": SplineCoupling, "mixture": MixtureCoupling}


class RealNVP(MultiscaleFlow):
    """RealNVP: each level but the last is 3 checkerboard couplings, a squeeze, 3 channel-mask
    couplings and a split; the last level is 4 checkerboard couplings. Masks alternate parity.

    Couplings use residual networks (``num_blocks`` blocks of ``hidden_channels``). Each coupling is
    preceded by an ActNorm, which stands in for the paper's batch normalisation (same role, no batch
    dependence at test time).

    The affine coupling (the paper's) is ``y_b = x_b * s + t`` with ``log s = scale * tanh(h_s)``
    (``|log s|`` bounded by a learned per-channel ``scale``) and, by default, a soft-clamped
    translation ``t = b * tanh(t_raw / b)``, ``b = translation_bound``. The bound is the fix for a
    compounding instability: the residual networks are positively homogeneous ReLU networks, so an
    unbounded translation grows with their input, and the growth compounds over the couplings.
    After ActNorm initialisation and an N(0, 0.05²) perturbation of every parameter of
    ``RealNVP(image_shape=(1, 8, 8))``, unbounded float64 latents exceed 1e20 and the round trip
    fails; with ``b = 5`` re-encoding the round trip recovers the latents to 1e-12 (both checked by
    ``tests/models/test_realnvp.py``). The data live in
    ``[-0.5, 0.5]`` and ActNorm standardises each coupling's input, so a useful translation is far
    below 5 and the clamp is close to the identity there (``b tanh(t/b) = t - t³/(3b²) + ...``).

    Args:
        image_shape: ``(C, H, W)``; H and W divisible by ``2**(levels - 1)``.
        levels: number of scales (the paper uses 3 on CIFAR-10).
        hidden_channels, num_blocks: the residual coupling networks (64 and 8 in the paper).
        coupling: ``"affine"`` (the paper's, above), ``"spline"`` (rational-quadratic, Durkan et al.
            2019) or ``"mixture"`` (Flow++'s logistic-mixture CDF, numerical inverse), as for
            :class:`~glowlab.models.Glow`.
        coupling_kwargs: extra arguments of the coupling class (e.g. ``bins``/``bound`` for
            splines, ``components`` for mixtures).
        translation_bound: ``b > 0``, the affine couplings' translation bound (default 5.0); None:
            unbounded, as in glowlab 0.1 (checkpoints of 0.1 are rebuilt that way,
            :mod:`glowlab.models.compat`). Spline and mixture couplings ignore it.
        learn_top: learned mean/log-std of the top prior (else N(0, I)).
        num_classes: > 0 makes the model class-conditional (labels ``[B]`` as ``context``), with a
            classifier on the top latent; ``context_features`` > 0: conditional on a tensor ``[B, F]``.
        condition_couplings, context_channels: as for :class:`~glowlab.models.Glow`.
        memory_saving: ``"none"``, ``"checkpoint"`` or ``"reversible"``, as for
            :class:`~glowlab.models.Glow` (see :mod:`glowlab.execution.memory_saving`).

    Example:
        >>> import torch
        >>> m = RealNVP(image_shape=(1, 4, 4), levels=2, hidden_channels=8, num_blocks=1, coupling="spline",
        ...             coupling_kwargs={"bins": 4})
        >>> x = torch.rand(3, 1, 4, 4) - 0.5
        >>> zs, logdet = m(x)
        >>> [tuple(z.shape) for z in zs], tuple(logdet.shape)
        ([(3, 2, 2, 2), (3, 2, 2, 2)], (3,))
        >>> torch.allclose(m.inverse(zs), x, atol=1e-5)
        True

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
    """

    def __init__(self, image_shape=(3, 32, 32), levels: int = 3, hidden_channels: int = 64,
                 num_blocks: int = 4, learn_top: bool = False, num_classes: int = 0,
                 memory_saving: str = "none", context_features: int = 0, condition_couplings: bool = True,
                 context_channels: int = 16, coupling: str = "affine", coupling_kwargs: dict | None = None,
                 translation_bound: float | None = 5.0):
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels must be a positive integer, got {levels!r}")
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {sorted(COUPLINGS)}, got {coupling!r}")
        if translation_bound is not None and (isinstance(translation_bound, bool) or not (
                isinstance(translation_bound, (int, float)) and translation_bound > 0)):
            raise ValueError(f"translation_bound must be a number > 0 or None (unbounded), got {translation_bound!r}")
        check_memory_saving(memory_saving)
        c, h, w = check_divisible(image_shape, levels - 1, f"RealNVP with levels={levels}", levels_offset=1)
        embedding = coupling_context(num_classes, context_features, condition_couplings, context_channels)
        k = embedding.features if embedding is not None else 0

        def sequence(steps):  # checkpoint segments: (actnorm, coupling) pairs and the squeeze
            segments = [1 if len(list(f.parameters())) == 0 else 2 for f in steps if not isinstance(f, ActNorm)]
            return MemorySavingSequence(steps, memory_saving, segments)

        own = {"scale_fn": "tanh", "translation_bound": translation_bound} if coupling == "affine" else {}
        kwargs = {**own, **(coupling_kwargs or {})}

        def coupling_step(channels: int, mask: str, parity: int):
            return [ActNorm(channels),
                    COUPLINGS[coupling](channels, hidden_channels, mask=mask, parity=parity, net="resnet",
                                        num_blocks=num_blocks, cond_channels=k, **kwargs)]

        flows, splits = [], []
        for level in range(levels):
            if level == levels - 1:
                steps = [f for p in (0, 1, 0, 1) for f in coupling_step(c, "checkerboard", p)]
                flows.append(sequence(steps))
                splits.append(None)
                break
            steps = [f for p in (0, 1, 0) for f in coupling_step(c, "checkerboard", p)]
            c, h, w = 4 * c, h // 2, w // 2
            steps.append(Squeeze())
            steps += [f for p in (0, 1, 0) for f in coupling_step(c, "channel", p)]
            flows.append(sequence(steps))
            split = Split(c)
            splits.append(split)
            c = split.h_channels
        super().__init__(image_shape, flows, splits, LearnedPrior((c, h, w), learn_top, num_classes, context_features),
                         embedding)
        self.config = dict(levels=levels, hidden_channels=hidden_channels, num_blocks=num_blocks,
                           coupling=coupling, translation_bound=translation_bound, memory_saving=memory_saving,
                           condition_couplings=embedding is not None)
