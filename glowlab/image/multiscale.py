"""The multiscale model shared by Glow, RealNVP and NICE: levels of flows, splits and priors, as a
:class:`~glowlab.core.Density`.

Level ``i`` applies ``levels[i]`` (a bijection on ``[B, C, H, W]``) and then, except at the top,
factors out half its channels with ``splits[i]``; the top latent gets ``top_prior``::

    x --levels[0]--> [h | z_0] --levels[1]--> [h | z_1] ... --levels[L-1]--> z_top

    log p(x | c) = log p_top(z_top | c) + sum_i log p_split_i(z_i | h_i) + ladj(x)     (nats per image)

``context`` (a class label ``[B]`` or a tensor ``[B, F]``) reaches the top prior and, when the model
has a ``context_embedding``, every coupling network (as ``[B, K]`` features tiled over space).
A class-conditional model also has a zero-initialised linear ``classifier`` on the mean-pooled top
latent (:meth:`MultiscaleFlow.class_logits`), Glow's auxiliary classification objective.

Example:
    >>> import torch
    >>> from glowlab.models import Glow
    >>> m = Glow(image_shape=(1, 4, 4), levels=2, depth=1, hidden_channels=4, num_classes=3)
    >>> y = torch.tensor([0, 2])
    >>> _ = m.log_prob(torch.rand(2, 1, 4, 4) - 0.5, context=y)  # ActNorm's data-dependent initialisation
    >>> x, log_p = m.rsample_and_log_prob(2, context=y, temperature=0.7)
    >>> bool(torch.allclose(log_p, m.log_prob(x, context=y), atol=1e-4))
    True
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from glowlab.core.bijection import Bijection, logdet_dtype
from glowlab.core.context import ContextEmbedding
from glowlab.core.density import Density, context_batch
from glowlab.image.priors import LatentPrior, legacy_context, legacy_sample_args
from glowlab.image.split import Split

__all__ = ["MultiscaleFlow", "check_divisible"]

log = logging.getLogger(__name__)


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


class MultiscaleFlow(Density):
    """A stack of levels (see the module docstring).

    Shapes: ``x`` is ``[B, *image_shape]`` in model space (dequantised, ``[-0.5, 0.5)``). ``zs`` is a
    list with one tensor per level, finest first. ``logdet`` and ``log_prob`` are ``[B]`` nats per
    image, accumulated in float32 or wider.

    Args:
        image_shape: ``(C, H, W)``.
        flows: one bijection per level.
        splits: one :class:`Split` per level, None at the top.
        top_prior: the prior of the top latent (its ``num_classes``/``context_features`` say what
            context the model takes).
        context_embedding: maps the context to the couplings' ``[B, K]`` input (None: only the top
            prior is conditional).
    """

    def __init__(self, image_shape, flows: list[Bijection], splits: list[Split | None], top_prior: LatentPrior,
                 context_embedding: ContextEmbedding | None = None):
        super().__init__()
        if len(flows) != len(splits) or splits[-1] is not None:
            raise ValueError("need one split per level, and none at the top level")
        self.image_shape = tuple(int(v) for v in image_shape)
        self.event_shape = self.image_shape
        self.levels = nn.ModuleList(flows)
        self.splits = nn.ModuleList([s if s is not None else nn.Identity() for s in splits])
        self.top_prior = top_prior
        self.num_classes, self.context_features = int(top_prior.num_classes), int(top_prior.context_features)
        self.context_embedding = context_embedding
        if self.num_classes:
            self.classifier = nn.Linear(top_prior.shape[0], self.num_classes)
            nn.init.zeros_(self.classifier.weight), nn.init.zeros_(self.classifier.bias)

    @property
    def condition_couplings(self) -> bool:
        """Whether the context reaches the coupling networks (not only the top prior)."""
        return self.context_embedding is not None

    @property
    def memory_saving(self) -> str:
        """How the levels trade compute for activation memory in training: ``"none"``,
        ``"checkpoint"`` or ``"reversible"`` (see :mod:`glowlab.execution.memory_saving`). Assignable."""
        modes = {getattr(level, "memory_saving", "none") for level in self.levels}
        return modes.pop() if len(modes) == 1 else "mixed"

    @memory_saving.setter
    def memory_saving(self, mode: str) -> None:
        from glowlab.execution.memory_saving import (
            MemorySavingSequence,
            check_memory_saving,
        )

        check_memory_saving(mode)
        for level in self.levels:
            if isinstance(level, MemorySavingSequence):
                level.memory_saving = mode
            elif mode != "none":
                raise ValueError(f"{type(self).__name__} does not support memory_saving={mode!r}")
        if hasattr(self, "config") and "memory_saving" in self.config:
            self.config["memory_saving"] = mode

    def compile_levels(self, enable: bool = True, **kwargs) -> None:
        """``torch.compile`` the forward pass of every level, in place (``kwargs`` as for
        :func:`torch.compile`; ``enable=False`` goes back to eager). Not :meth:`nn.Module.compile`,
        which compiles the module's ``forward`` as one graph.

        ``forward``, ``encode``, ``log_prob`` and training then run compiled graphs, one per level;
        ``inverse`` and ``sample`` stay eager. The first training batch (ActNorm's data-dependent
        initialisation) runs eagerly; compilation happens on the next calls (about a minute on a
        2-core CPU). ``memory_saving="reversible"`` levels stay eager. Values equal eager ones up to
        float rounding. Shapes are static by default (``dynamic=False``).

        Global state: the levels share one compiled function, which needs a graph per level, mode
        (train/eval) and input kind, so this raises ``torch._dynamo.config.recompile_limit`` (a
        process-wide setting) to ``8 * len(levels)`` when it is lower, and logs that it did. It never
        lowers it.
        """
        import torch._dynamo

        from glowlab.execution.memory_saving import MemorySavingSequence

        kwargs.setdefault("dynamic", False)  # static shapes per level (dynamic ones hit inductor bugs)
        limit = 8 * len(self.levels)
        if enable and torch._dynamo.config.recompile_limit < limit:
            log.info("compile_levels: raising torch._dynamo.config.recompile_limit from %d to %d (process-wide)",
                     torch._dynamo.config.recompile_limit, limit)
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

    def _flow_context(self, context, batch: int) -> torch.Tensor | None:
        """The ``[B, K]`` features the coupling networks get (None when they are not conditional)."""
        return None if self.context_embedding is None else self.context_embedding(context, batch)

    def class_logits(self, z_top: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` logits of the linear classifier on the mean-pooled top latent (Glow's
        class-conditional objective, openai/glow's ``y_logits``)."""
        if not self.num_classes:
            raise ValueError(f"{type(self).__name__} is not class-conditional (num_classes=0): it has no classifier")
        return self.classifier(z_top.to(self.classifier.weight.dtype).mean(dim=(2, 3)))

    # -- data -> latents ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, context=None, *, cond=None):
        """Return ``(zs, logdet, log_prior)``; ``logdet`` and ``log_prior`` are ``[B]`` nats."""
        context = legacy_context(type(self).__name__, context, cond=cond)
        self._check_input(x)
        fc = self._flow_context(context, x.shape[0])
        logdet = x.new_zeros(x.shape[0], dtype=logdet_dtype(x))
        log_prior = torch.zeros_like(logdet)
        zs = []
        h = x
        for flow, split in zip(self.levels, self.splits, strict=True):
            h, ld = flow(h, fc)
            logdet = logdet + ld
            if isinstance(split, Split):
                h, z = split.split(h)
                log_prior = log_prior + split.log_prob(z, h)
                zs.append(z)
        zs.append(h)
        log_prior = log_prior + self.top_prior.log_prob(h, context)
        return zs, logdet, log_prior

    def forward(self, x: torch.Tensor, context=None, *, cond=None):
        """``x -> (zs, logdet)``: the latents (one per level, finest first) and ``[B]`` nats."""
        zs, logdet, _ = self.encode(x, context, cond=cond)
        return zs, logdet

    def log_prob(self, x: torch.Tensor, context=None, *, cond=None) -> torch.Tensor:
        """``log p(x | context)`` in nats per image, ``[B]``: priors of all latents plus the logdet."""
        _, logdet, log_prior = self.encode(x, context, cond=cond)
        return log_prior + logdet

    # -- latents -> data ---------------------------------------------------------------------------
    def inverse(self, zs: list[torch.Tensor], context=None, *, cond=None) -> torch.Tensor:
        """The exact inverse of :meth:`forward`: latents (as returned by it) to images."""
        context = legacy_context(type(self).__name__, context, cond=cond)
        if len(zs) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} latents (one per level), got {len(zs)}")
        fc = self._flow_context(context, zs[-1].shape[0])
        h = zs[-1]
        for i in reversed(range(len(self.levels))):
            split = self.splits[i]
            if isinstance(split, Split):
                h = split.merge(h, zs[i])
            h, _ = self.levels[i].inverse(h, fc)
        return h

    def _decode(self, n: int, context, temperature: float, generator, with_log_prob: bool):
        """Draw the latents top-down and invert the levels; ``(x, log p(x) or None)``."""
        context_batch(n, context)
        p = next(self.parameters(), None)
        device, dtype = (p.device, p.dtype) if p is not None else (None, None)
        h = self.top_prior.sample(n, context, temperature, device, dtype, generator)
        log_p = self.top_prior.log_prob(h, context) if with_log_prob else None
        fc = self._flow_context(context, n)
        for i in reversed(range(len(self.levels))):
            split = self.splits[i]
            if isinstance(split, Split):
                z = split.sample(n, h, temperature, generator=generator)
                if with_log_prob:
                    log_p = log_p + split.log_prob(z, h)
                h = split.merge(h, z)
            h, ladj_inv = self.levels[i].inverse(h, fc)
            if with_log_prob:
                log_p = log_p - ladj_inv  # log p(x) = log p(z) + ladj_forward = log p(z) - ladj_inverse
        return h, log_p

    def rsample_and_log_prob(self, n: int, context=None, temperature: float = 1.0,
                             generator: torch.Generator | None = None):
        """``n`` differentiable draws ``[n, *image_shape]`` and their ``log p(x | context)`` ``[n]``
        nats under the model itself (the temperature only changes the sampling distribution),
        computed from the priors and the inverse's ladj, without re-encoding."""
        context, temperature = legacy_sample_args(type(self).__name__, context, temperature)
        return self._decode(n, context, temperature, generator, with_log_prob=True)

    @torch.no_grad()
    def sample(self, n: int, context=None, temperature: float = 1.0, generator: torch.Generator | None = None,
               *, cond=None) -> torch.Tensor:
        """Draw ``n`` images ``[n, *image_shape]`` in model space.

        ``temperature`` multiplies the standard deviation of every level's prior (the top prior
        and each split's conditional prior), as in the Glow paper; 1.0 samples the model itself.
        ``context`` has one row per image. The pre-0.2 forms ``sample(n, T)``, ``sample(n, T, labels)``
        and ``cond=`` still work, with a ``DeprecationWarning``.
        """
        context, temperature = legacy_sample_args(type(self).__name__, context, temperature, cond=cond)
        return self._decode(n, context, temperature, generator, with_log_prob=False)[0]

    # -- checkpoints of earlier versions -----------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # glowlab 0.1 had no classifier: a zero-initialised one is what that model computed (nothing)
        if self.num_classes and prefix + "classifier.weight" not in state_dict:
            for name, value in self.classifier.state_dict().items():
                state_dict[f"{prefix}classifier.{name}"] = value.clone()
        if self.context_embedding is not None and prefix + "context_embedding.weight" not in state_dict \
                and prefix + "top_prior.class_embedding.weight" in state_dict:
            raise ValueError(
                f"this state dict is from glowlab 0.1, whose class-conditional {type(self).__name__} conditioned "
                f"only its top prior; build the model with condition_couplings=False to load it "
                f"(model.condition_couplings=false; FlowModule checkpoints are converted when loaded)")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
