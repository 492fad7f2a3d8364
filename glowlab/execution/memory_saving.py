"""Memory-saving training of flow sequences: gradient checkpointing and reversible backprop.

A flow is invertible, so the activations that backpropagation needs can be *recomputed* from the
output instead of being stored (Gomez et al., 2017; Jacobsen et al., 2018). This module provides
:class:`MemorySavingSequence`, a drop-in :class:`~glowlab.flows.FlowSequence` with three modes:

* ``"none"``: plain autograd. Activation memory grows linearly with the number of flows.
* ``"checkpoint"``: :func:`torch.utils.checkpoint.checkpoint` (non-reentrant) around each step
  (a group of flows, e.g. Glow's actnorm / 1x1 conv / coupling). Each step's input is stored and
  its internals are recomputed in the backward pass: memory is one tensor per step plus one step's
  internals, at the cost of one extra forward pass.
* ``"reversible"``: nothing but the sequence's output is stored. The backward pass walks the flows
  in reverse; for each it reconstructs the flow's input from its output with the exact inverse,
  re-runs the flow's forward with grad enabled and backpropagates through it. The activation
  memory is that of a single flow, whatever the depth. For affine/additive channel couplings the
  inverse and the recomputed forward share one evaluation of the coupling network (the kept half
  passes through unchanged), so the overhead is about one extra forward pass, as for checkpointing.

Gradients are those of the plain computation up to floating-point rounding of the reconstructed
inputs (relative error ~1e-6 in float32, ~1e-14 in float64). Both saving modes use the
plain path when no gradient is needed (``torch.no_grad``, e.g. evaluation and sampling). While any
:class:`~glowlab.flows.ActNorm` of the sequence still needs its data-dependent initialisation, the
first batch first runs un-wrapped and without a graph (the initialisation sees the real
activations, and the first step needs no more memory than the others); the saving path then runs
with the initialised parameters and gives the same outputs.
Autocast state is recorded in the forward pass and restored for the recomputation.

Example:
    >>> import torch
    >>> from glowlab.flows import ActNorm, AffineCoupling, InvConv1x1LU
    >>> seq = MemorySavingSequence([ActNorm(4), InvConv1x1LU(4), AffineCoupling(4, 8)],
    ...                            memory_saving="reversible", segments=[3])
    >>> x = torch.randn(2, 4, 3, 3)
    >>> y, logdet = seq(x.requires_grad_())  # the first call also initialises ActNorm
    >>> (y.square().sum() - logdet.sum()).backward()
    >>> x.grad.shape
    torch.Size([2, 4, 3, 3])

References:
    Gomez, Ren, Urtasun & Grosse, "The Reversible Residual Network: Backpropagation Without
    Storing Activations", NeurIPS 2017.
    Jacobsen, Smeulders & Oyallon, "i-RevNet: Deep Invertible Networks", ICLR 2018.
    Chen, Xu, Zhang & Guestrin, "Training Deep Nets with Sublinear Memory Cost", 2016.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from glowlab.layers.elementwise.actnorm import ActNorm
from glowlab.core.bijection import Bijection as Flow
from glowlab.core.bijection import Compose as FlowSequence
from glowlab.core.bijection import logdet_dtype
from glowlab.layers.coupling.affine import AffineCoupling

__all__ = ["MEMORY_SAVING_MODES", "MemorySavingSequence", "reversible_forward", "check_memory_saving",
           "register_recompute"]

MEMORY_SAVING_MODES = ("none", "checkpoint", "reversible")


def check_memory_saving(mode: str) -> str:
    """Validate a ``memory_saving`` argument and return it."""
    if mode not in MEMORY_SAVING_MODES:
        raise ValueError(f"memory_saving must be one of {MEMORY_SAVING_MODES}, got {mode!r}")
    return mode


def _needs_actnorm_init(module: nn.Module) -> bool:
    """True while any ActNorm inside ``module`` still waits for its data-dependent initialisation."""
    return any(isinstance(m, ActNorm) and not m.is_initialized() for m in module.modules())


# -- per-flow recomputation (the reversible backward step of one flow) ---------------------------------

_RECOMPUTE: dict[type, Callable] = {}


def register_recompute(cls: type):
    """Register a specialised reversible backward step for flows of type ``cls`` (and subclasses).

    The function runs with grad enabled and receives ``(flow, y, cond, grad_y, grad_logdet,
    params, need_x)``; it returns ``(x, grad_x, grad_cond, grad_params)``: the flow's input
    reconstructed from its output ``y`` (no graph), the gradient of the loss w.r.t. that input
    (None unless ``need_x``), w.r.t. ``cond`` (None unless it requires grad) and w.r.t. each of
    ``params`` (None where unused). The default inverts the flow, then backpropagates through a
    re-run of its forward.
    """

    def deco(fn):
        _RECOMPUTE[cls] = fn
        return fn

    return deco


def _grad(outputs, inputs, grad_outputs):
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    if not pairs or not inputs:
        return [None] * len(inputs)
    return list(torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True))


def _cond_input(cond):
    return cond if isinstance(cond, torch.Tensor) and cond.requires_grad else None


def _generic_recompute(flow: Flow, y, cond, g_y, g_ld, params, need_x: bool):
    """Invert under no_grad, then re-run ``flow.forward`` with grad and backpropagate through it."""
    with torch.no_grad():
        x, _ = flow.inverse(y, cond)
    x_leaf = x.detach().requires_grad_(need_x)
    out, ld = flow(x_leaf, cond)
    c = _cond_input(cond)
    inputs = ([x_leaf] if need_x else []) + ([c] if c is not None else []) + list(params)
    grads = _grad([out, ld], inputs, [g_y, g_ld])
    g_x = grads.pop(0) if need_x else None
    g_c = grads.pop(0) if c is not None else None
    return x.detach(), g_x, g_c, grads


@register_recompute(AffineCoupling)
def _coupling_recompute(flow: AffineCoupling, y, cond, g_y, g_ld, params, need_x: bool):
    """Channel-mask couplings: one network evaluation serves both the inverse and the recomputed
    forward, because the kept half of ``y`` *is* the kept half of ``x``."""
    if flow.mask != "channel":
        return _generic_recompute(flow, y, cond, g_y, g_ld, params, need_x)
    kept_y, changed_y = flow._split(y)
    g_kept, g_changed = flow._split(g_y)
    kept = kept_y.detach().requires_grad_(need_x)
    t, log_s = flow._net_params(kept, cond, y.dtype)
    with torch.no_grad():
        changed_x = changed_y - t if log_s is None else changed_y * (-log_s).exp() - t
    changed = changed_x.detach().requires_grad_(need_x)
    if log_s is None:
        outs, gouts = [changed + t], [g_changed]
    else:  # exactly the forward's arithmetic
        outs = [(changed + t) * log_s.exp(), log_s.to(logdet_dtype(y)).flatten(1).sum(1)]
        gouts = [g_changed, g_ld]
    c = _cond_input(cond)
    inputs = ([kept, changed] if need_x else []) + ([c] if c is not None else []) + list(params)
    grads = _grad(outs, inputs, gouts)
    g_x = None
    if need_x:
        gk, gc = grads.pop(0), grads.pop(0)
        gk = g_kept if gk is None else g_kept + gk
        gc = g_changed if gc is None else gc
        g_x = flow._join(gk, gc)
    g_c = grads.pop(0) if c is not None else None
    with torch.no_grad():
        x = flow._join(kept_y, changed_x)
    return x, g_x, g_c, grads


def _recompute_fn(flow: Flow) -> Callable:
    for cls in type(flow).__mro__:
        if cls in _RECOMPUTE:
            return _RECOMPUTE[cls]
    return _generic_recompute


class _ReversibleFunction(torch.autograd.Function):
    """``(x, cond, *params) -> (y, logdet)`` through ``flows``, storing only ``y``."""

    @staticmethod
    def forward(ctx, flows: Sequence[Flow], flow_params, x, cond, *params):
        logdet = x.new_zeros(x.shape[0], dtype=logdet_dtype(x))
        h = x
        for flow in flows:
            h, ld = flow(h, cond)
            logdet = logdet + ld
        if h is x:  # outputs must be new tensors
            h = h.clone()
        ctx.flows, ctx.flow_params, ctx.cond = flows, flow_params, cond
        dev = x.device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        ctx.save_for_backward(h)
        ctx.logdet_dtype = logdet.dtype
        return h, logdet

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_ld):
        (y,) = ctx.saved_tensors
        if g_y is None:
            g_y = torch.zeros_like(y)
        if g_ld is None:
            g_ld = y.new_zeros(y.shape[0], dtype=ctx.logdet_dtype)
        cond = ctx.cond
        index = {id(p): i for i, p in enumerate(p for ps in ctx.flow_params for p in ps)}
        n = len(index)
        g_params: list[torch.Tensor | None] = [None] * n
        g_cond = None
        need_x_final = ctx.needs_input_grad[2]
        dev, ac_enabled, ac_dtype = ctx.autocast
        h = y.detach()
        flows = ctx.flows
        with torch.enable_grad(), torch.autocast(dev, dtype=ac_dtype, enabled=ac_enabled):
            for k in reversed(range(len(flows))):
                flow, params = flows[k], ctx.flow_params[k]
                need_x = k > 0 or need_x_final
                h, g_x, gc, gp = _recompute_fn(flow)(flow, h, cond, g_y, g_ld, params, need_x)
                for p, g in zip(params, gp):
                    if g is not None:
                        i = index[id(p)]
                        g_params[i] = g if g_params[i] is None else g_params[i] + g
                if gc is not None:
                    g_cond = gc if g_cond is None else g_cond + gc
                g_y = g_x
        ctx.flows = ctx.flow_params = ctx.cond = None
        return (None, None, g_y if need_x_final else None, g_cond, *g_params)


def reversible_forward(flows: Sequence[Flow], x: torch.Tensor, cond: torch.Tensor | None = None):
    """Apply ``flows`` in order storing no intermediate activations; returns ``(y, logdet)``.

    The backward pass reconstructs each flow's input from its output (``flow.inverse``) and
    backpropagates through a recomputed forward. Every flow must be exactly invertible and
    deterministic. Gradients reach ``x``, ``cond`` and every parameter of the flows.
    """
    flows = list(flows)
    seen: set[int] = set()
    flow_params = []
    for f in flows:
        ps = []
        for p in f.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                ps.append(p)
        flow_params.append(tuple(ps))
    params = [p for ps in flow_params for p in ps]
    return _ReversibleFunction.apply(flows, flow_params, x, cond, *params)


class MemorySavingSequence(FlowSequence):
    """A :class:`~glowlab.flows.FlowSequence` that trades compute for activation memory.

    Args:
        flows: the flows, applied in order (the state-dict layout is that of ``FlowSequence``, so
            checkpoints load across modes).
        memory_saving: ``"none"``, ``"checkpoint"`` or ``"reversible"`` (see the module docstring).
        segments: the lengths of consecutive groups of flows that ``"checkpoint"`` wraps as one
            step (default: each flow on its own); they must sum to ``len(flows)``. Groups without
            parameters are never wrapped.

    The mode can be changed at any time by assigning ``memory_saving``.
    """

    def __init__(self, flows: Iterable[Flow], memory_saving: str = "none", segments: Sequence[int] | None = None):
        super().__init__(flows)
        self.memory_saving = check_memory_saving(memory_saving)
        n = len(self.flows)
        segments = [1] * n if segments is None else [int(s) for s in segments]
        if sum(segments) != n or any(s < 1 for s in segments):
            raise ValueError(f"segments {segments} must be positive and sum to the number of flows ({n})")
        self.segments = segments
        self._all_initialized = False  # host-side: every ActNorm inside is initialised
        self._compiled = None

    def _load_from_state_dict(self, *args, **kwargs):
        self._all_initialized = False  # the loaded state may hold uninitialised ActNorms
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
        """The first training batch: ActNorm's data-dependent initialisation. Returns the output,
        or None when the saving path should run (on the parameters just initialised)."""
        if not _needs_actnorm_init(self):
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
