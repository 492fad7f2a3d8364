"""Memory-saving training of flow sequences: gradient checkpointing and reversible backprop.

:class:`MemorySavingSequence` is a drop-in :class:`~glowlab.core.Compose` with three modes:

* ``"none"``: plain autograd. Activation memory grows linearly with the number of flows.
* ``"checkpoint"``: :func:`torch.utils.checkpoint.checkpoint` (non-reentrant) around each step
  (a group of flows, e.g. Glow's actnorm / 1x1 conv / coupling). Each step's input is stored and
  its internals are recomputed in the backward pass: memory is one tensor per step plus one step's
  internals, at the cost of one extra forward pass. Works for every layer.
* ``"reversible"``: nothing but the sequence's output is stored (:mod:`glowlab.execution.reversible`).
  Refused, with an error naming the layer, when a layer's inverse is not cheap and exact.

Both saving modes use the plain path when no gradient is needed (``torch.no_grad``, e.g.
evaluation and sampling). While any layer of the sequence still needs its data-dependent
initialisation (the :class:`~glowlab.core.DataDependentInit` hook, e.g. ActNorm), the first batch
first runs un-wrapped and without a graph (the initialisation sees the real activations, and the
first step needs no more memory than the others); the saving path then runs with the initialised
parameters and gives the same outputs.

Example:
    >>> import torch
    >>> from glowlab.layers import ActNorm, AffineCoupling, InvConv1x1LU
    >>> seq = MemorySavingSequence([ActNorm(4), InvConv1x1LU(4), AffineCoupling(4, 8)],
    ...                            memory_saving="reversible", segments=[3])
    >>> x = torch.randn(2, 4, 3, 3)
    >>> y, logdet = seq(x.requires_grad_())  # the first call also initialises ActNorm
    >>> (y.square().sum() - logdet.sum()).backward()
    >>> x.grad.shape
    torch.Size([2, 4, 3, 3])

References:
    Chen, Xu, Zhang & Guestrin, "Training Deep Nets with Sublinear Memory Cost", 2016.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from glowlab.core.bijection import Bijection as Flow
from glowlab.core.bijection import Compose as FlowSequence
from glowlab.core.bijection import logdet_dtype
from glowlab.core.data_init import needs_data_init
from glowlab.execution.reversible import check_reversible, reversible_forward

__all__ = ["MEMORY_SAVING_MODES", "MemorySavingSequence", "reversible_forward", "check_memory_saving"]

MEMORY_SAVING_MODES = ("none", "checkpoint", "reversible")


def check_memory_saving(mode: str) -> str:
    """Validate a ``memory_saving`` argument and return it."""
    if mode not in MEMORY_SAVING_MODES:
        raise ValueError(f"memory_saving must be one of {MEMORY_SAVING_MODES}, got {mode!r}")
    return mode


class MemorySavingSequence(FlowSequence):
    """A :class:`~glowlab.flows.FlowSequence` that trades compute for activation memory.

    Args:
        flows: the flows, applied in order (the state-dict layout is that of ``FlowSequence``, so
            checkpoints load across modes).
        memory_saving: ``"none"``, ``"checkpoint"`` or ``"reversible"`` (see the module docstring).
        segments: the lengths of consecutive groups of flows that ``"checkpoint"`` wraps as one
            step (default: each flow on its own); they must sum to ``len(flows)``. Groups without
            parameters are never wrapped.

    The mode can be changed at any time by assigning ``memory_saving``; ``"reversible"`` is refused
    (``ValueError`` naming the layer and its ``inverse_kind``) when a layer's inverse is not cheap.
    """

    def __init__(self, flows: Iterable[Flow], memory_saving: str = "none", segments: Sequence[int] | None = None):
        super().__init__(flows)
        self.memory_saving = memory_saving
        n = len(self.flows)
        segments = [1] * n if segments is None else [int(s) for s in segments]
        if sum(segments) != n or any(s < 1 for s in segments):
            raise ValueError(f"segments {segments} must be positive and sum to the number of flows ({n})")
        self.segments = segments
        self._all_initialized = False  # host-side: every DataDependentInit layer inside is initialised
        self._compiled = None

    @property
    def memory_saving(self) -> str:
        """``"none"``, ``"checkpoint"`` or ``"reversible"``; assignable."""
        return self._memory_saving

    @memory_saving.setter
    def memory_saving(self, mode: str) -> None:
        check_memory_saving(mode)
        if mode == "reversible":
            check_reversible(self.flows)
        self._memory_saving = mode

    def _load_from_state_dict(self, *args, **kwargs):
        self._all_initialized = False  # the loaded state may hold uninitialised layers
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"memory_saving={self.memory_saving!r}"

    def compile_forward(self, enable: bool = True, **kwargs) -> None:
        """Run the forward pass through ``torch.compile(**kwargs)`` from now on (``enable=False``:
        eager again). Used in modes ``"none"`` and ``"checkpoint"``; ``"reversible"`` stays eager,
        since its backward re-runs the flows one by one outside any graph. The first,
        ActNorm-initialising training batch always runs eagerly, so the compiled graphs only ever
        see the initialised model (no host syncs, no graph breaks).

        The compiled function is the class's unbound ``_steady_forward``, called with ``self``, so
        a ``deepcopy`` of the module (e.g. an EMA copy) runs its own weights through it.
        """
        self._compiled = torch.compile(MemorySavingSequence._steady_forward, **kwargs) if enable else None

    def _plain(self, x, cond):
        return FlowSequence.forward(self, x, cond)

    def _needs_grad(self, x, cond) -> bool:
        if not torch.is_grad_enabled():
            return False
        if x.requires_grad or (isinstance(cond, torch.Tensor) and cond.requires_grad):
            return True
        return any(p.requires_grad for p in self.parameters())

    def _initializing_forward(self, x, cond):
        """The first training batch: the layers' data-dependent initialisation. Returns the output,
        or None when the saving path should run (on the parameters just initialised)."""
        if not needs_data_init(self):
            self._all_initialized = True
            return None
        if self.memory_saving == "none" or not self._needs_grad(x, cond):
            return self._plain(x, cond)
        # data-dependent initialisation on the real activations, without a graph (so the first
        # batch does not need the memory of plain autograd); the saving path then sees the
        # initialised parameters and gives the same outputs as the initialising pass
        with torch.no_grad():
            self._plain(x, cond)
        return None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        mode = check_memory_saving(self.memory_saving)
        if self.training and not self._all_initialized:
            out = self._initializing_forward(x, cond)
            if out is not None:
                return out
        compiled = getattr(self, "_compiled", None)
        if compiled is not None and mode != "reversible":
            return compiled(self, x, cond)
        return self._steady_forward(x, cond)

    def _steady_forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        mode = self.memory_saving
        if mode == "none" or not self._needs_grad(x, cond):
            return self._plain(x, cond)
        if mode == "reversible":
            return reversible_forward(self.flows, x, cond)
        logdet = x.new_zeros(x.shape[0], dtype=logdet_dtype(x))
        start = 0
        for size in self.segments:
            group = list(self.flows[start:start + size])
            start += size
            if any(True for f in group for _ in f.parameters()):
                x, ld = checkpoint(_run_group, group, x, cond, use_reentrant=False)
            else:
                x, ld = _run_group(group, x, cond)
            logdet = logdet + ld
        return x, logdet


def _run_group(group, x, cond):
    logdet = None
    for flow in group:
        x, ld = flow(x, cond)
        logdet = ld if logdet is None else logdet + ld
    return x, logdet
