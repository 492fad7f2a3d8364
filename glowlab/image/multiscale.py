"""The multiscale flow model shared by Glow, RealNVP and NICE: flows plus priors."""

from __future__ import annotations

import torch
from torch import nn

from glowlab.core.bijection import Bijection as Flow
from glowlab.core.bijection import logdet_dtype
from glowlab.image.split import LearnedPrior, Split

__all__ = ["MultiscaleFlow", "check_divisible"]


def check_divisible(image_shape, num_squeezes: int, arg_hint: str, levels_offset: int = 0) -> tuple[int, int, int]:
    """Validate ``image_shape = (C, H, W)`` for ``num_squeezes`` halvings; return it as ints.

    ``levels_offset`` is ``levels - num_squeezes`` of the model, to suggest a valid ``levels``.
    """
    if len(tuple(image_shape)) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
    c, h, w = (int(v) for v in image_shape)
    if min(c, h, w) < 1:
        raise ValueError(f"image_shape must be positive, got {image_shape!r}")
    f = 2**num_squeezes
    if h % f or w % f:
        good = max(k for k in range(num_squeezes + 1) if h % 2**k == 0 and w % 2**k == 0)
        raise ValueError(
            f"image size {h}x{w} is not divisible by 2**{num_squeezes}={f}, which {arg_hint} needs; "
            f"use levels <= {good + levels_offset} for this size, or resize or pad the images "
            f"(data.image_size=..., data.pad_to=...)"
        )
    return c, h, w


class MultiscaleFlow(nn.Module):
    """A stack of levels. Level ``i`` applies ``flows[i]`` and then, except at the top, factors
    out half its channels with ``splits[i]``; the top latent gets ``top_prior``.

    Shapes: ``x`` is ``[B, *image_shape]`` in model space (dequantised, ``[-0.5, 0.5)``).
    ``z`` is a list with one tensor per level, finest first. ``logdet`` and ``log_prob`` are
    ``[B]`` nats per image, accumulated in float32 or wider.

    ``cond`` is the class label ``[B]`` (long) for class-conditional models, else None.
    """

    def __init__(self, image_shape, flows: list[Flow], splits: list[Split | None], top_prior: LearnedPrior):
        super().__init__()
        if len(flows) != len(splits) or splits[-1] is not None:
            raise ValueError("need one split per level, and none at the top level")
        self.image_shape = tuple(int(v) for v in image_shape)
        self.levels = nn.ModuleList(flows)
        self.splits = nn.ModuleList([s if s is not None else nn.Identity() for s in splits])
        self.top_prior = top_prior
        self.num_classes = top_prior.num_classes

    @property
    def memory_saving(self) -> str:
        """How the levels trade compute for activation memory in training: ``"none"``,
        ``"checkpoint"`` or ``"reversible"`` (see :mod:`glowlab.execution.memory_saving`). Assignable."""
        modes = {getattr(level, "memory_saving", "none") for level in self.levels}
        return modes.pop() if len(modes) == 1 else "mixed"

    @memory_saving.setter
    def memory_saving(self, mode: str) -> None:
        from glowlab.execution.memory_saving import MemorySavingSequence, check_memory_saving

        check_memory_saving(mode)
        for level in self.levels:
            if isinstance(level, MemorySavingSequence):
                level.memory_saving = mode
            elif mode != "none":
                raise ValueError(f"{type(self).__name__} does not support memory_saving={mode!r}")
        if hasattr(self, "config") and "memory_saving" in self.config:
            self.config["memory_saving"] = mode

    def compile(self, enable: bool = True, **kwargs) -> None:
        """``torch.compile`` the forward pass of every level, in place (``kwargs`` as for
        :func:`torch.compile`; ``enable=False`` goes back to eager).

        ``forward``, ``encode``, ``log_prob`` and training then run compiled graphs, one per level;
        ``inverse`` and ``sample`` stay eager. The first training batch (ActNorm's data-dependent
        initialisation) runs eagerly; compilation happens on the next calls (about a minute on a
        2-core CPU). ``memory_saving="reversible"`` levels stay eager (the reversible backward re-runs
        flows one at a time). Values equal eager ones up to float rounding. Shapes are static by
        default (``dynamic=False``), and ``torch._dynamo.config.recompile_limit`` is raised to allow a
        graph per level, mode (train/eval) and input kind. ``torch.compile(model.log_prob)`` works
        too, once the model is initialised (one large graph, slower to compile).
        """
        import torch._dynamo

        from glowlab.execution.memory_saving import MemorySavingSequence

        kwargs.setdefault("dynamic", False)  # static shapes per level (dynamic ones hit inductor bugs)
        limit = 8 * len(self.levels)
        if torch._dynamo.config.recompile_limit < limit:
            torch._dynamo.config.recompile_limit = limit
        for level in self.levels:
            if isinstance(level, MemorySavingSequence):
                level.compile_forward(enable, **kwargs)

    @property
    def num_dims(self) -> int:
        """D = C * H * W of one image."""
        c, h, w = self.image_shape
        return c * h * w

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{type(self).__name__} was built for images of shape [B, "
                f"{', '.join(map(str, self.image_shape))}], got a tensor of shape {tuple(x.shape)}; "
                f"build the model with image_shape={tuple(x.shape[1:])} or resize the data"
            )

    def _flow_cond(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """The conditioning tensor passed to the flows (None: only the top prior is conditional)."""
        return None

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        """Return ``(zs, logdet, log_prior)``; ``logdet`` and ``log_prior`` are ``[B]`` nats."""
        self._check_input(x)
        fc = self._flow_cond(cond)
        logdet = x.new_zeros(x.shape[0], dtype=logdet_dtype(x))
        log_prior = torch.zeros_like(logdet)
        zs = []
        h = x
        for flow, split in zip(self.levels, self.splits):
            h, ld = flow(h, fc)
            logdet = logdet + ld
            if isinstance(split, Split):
                h, z = split.split(h)
                log_prior = log_prior + split.log_prob(z, h)
                zs.append(z)
        zs.append(h)
        log_prior = log_prior + self.top_prior.log_prob(h, cond)
        return zs, logdet, log_prior

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        """``x -> (zs, logdet)``: the latents (one per level, finest first) and ``[B]`` nats."""
        zs, logdet, _ = self.encode(x, cond)
        return zs, logdet

    def inverse(self, zs: list[torch.Tensor], cond: torch.Tensor | None = None) -> torch.Tensor:
        """The exact inverse of :meth:`forward`: latents (as returned by it) to images."""
        if len(zs) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} latents (one per level), got {len(zs)}")
        fc = self._flow_cond(cond)
        h = zs[-1]
        for i in reversed(range(len(self.levels))):
            split = self.splits[i]
            if isinstance(split, Split):
                h = split.merge(h, zs[i])
            h, _ = self.levels[i].inverse(h, fc)
        return h

    def log_prob(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x)`` in nats per image, ``[B]``: priors of all latents plus the logdet."""
        _, logdet, log_prior = self.encode(x, cond)
        return log_prior + logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` images ``[n, *image_shape]`` in model space.

        ``temperature`` multiplies the standard deviation of every level's prior (the top prior
        and each split's conditional prior), as in the Glow paper; 1.0 samples the model itself.
        """
        p = next(self.parameters())
        h = self.top_prior.sample(n, temperature, cond, p.device, p.dtype, generator)
        fc = self._flow_cond(cond)
        for i in reversed(range(len(self.levels))):
            split = self.splits[i]
            if isinstance(split, Split):
                h = split.merge(h, split.sample(h, temperature, generator))
            h, _ = self.levels[i].inverse(h, fc)
        return h
