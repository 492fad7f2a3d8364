"""Reversible backpropagation: train a sequence of bijections storing only its output.

A flow is invertible, so the activations backpropagation needs can be *recomputed* from the output
instead of being stored (Gomez et al., 2017; Jacobsen et al., 2018). The backward pass walks the
layers in reverse; each rebuilds its input from its output and backpropagates through a recomputed
forward: its own ``reconstruct_input_and_backward`` where it has one (a coupling shares one network
evaluation between both), else :func:`glowlab.core.recompute_by_inverse`. The activation memory is
that of a single layer, whatever the depth.

Only layers whose inverse is a cheap, exact closed form (``inverse_is_cheap``, i.e.
``inverse_kind == "analytic"``) can take part: :func:`check_reversible` refuses the others (MAF:
``"sequential"``, D passes; CNF and mixture couplings: ``"numerical"``; planar: ``"none"``) with an
error that names the layer, instead of being silently slow or inexact.

Gradients are those of the plain computation up to the rounding of the reconstructed inputs
(relative error ~1e-6 in float32, ~1e-14 in float64). Autocast state is recorded in the forward
pass and restored for the recomputation.

Example:
    >>> import torch
    >>> from glowlab.layers import AffineCoupling, InvConv1x1LU
    >>> flows = [InvConv1x1LU(4), AffineCoupling(4, 8, actnorm=False)]
    >>> x = torch.randn(2, 4, 3, 3, requires_grad=True)
    >>> y, ladj = reversible_forward(flows, x)
    >>> (y.square().sum() - ladj.sum()).backward()
    >>> x.grad.shape
    torch.Size([2, 4, 3, 3])

References:
    Gomez, Ren, Urtasun & Grosse, "The Reversible Residual Network: Backpropagation Without
    Storing Activations", NeurIPS 2017.
    Jacobsen, Smeulders & Oyallon, "i-RevNet: Deep Invertible Networks", ICLR 2018.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from glowlab.core.bijection import logdet_dtype
from glowlab.core.recompute import recompute_by_inverse

__all__ = ["reversible_forward", "check_reversible", "recompute_step"]


def check_reversible(flows: Sequence[nn.Module]) -> None:
    """Raise a ``ValueError`` naming the first layer whose inverse is not cheap and exact."""
    for i, flow in enumerate(flows):
        if not getattr(flow, "inverse_is_cheap", True):
            kind = getattr(flow, "inverse_kind", "?")
            raise ValueError(
                f"memory_saving='reversible' needs layers whose inverse is an exact closed form, but layer {i} "
                f"({type(flow).__name__}) has inverse_kind={kind!r}: rebuilding its input would be "
                f"{'impossible' if kind == 'none' else 'slow or inexact'}. Use memory_saving='checkpoint' "
                f"(or 'none') for this model"
            )


def recompute_step(flow: nn.Module) -> Callable:
    """The layer's own ``reconstruct_input_and_backward``, or the default by inverse and forward."""
    own = getattr(flow, "reconstruct_input_and_backward", None)
    if own is not None:
        return own
    return lambda *args: recompute_by_inverse(flow, *args)


class _ReversibleFunction(torch.autograd.Function):
    """``(x, context, *params) -> (y, ladj)`` through ``flows``, storing only ``y``."""

    @staticmethod
    def forward(ctx, flows: Sequence[nn.Module], flow_params, x, context, *params):
        ladj = x.new_zeros(x.shape[0], dtype=logdet_dtype(x))
        h = x
        for flow in flows:
            h, part = flow(h, context)
            ladj = ladj + part
        if h is x:  # outputs must be new tensors
            h = h.clone()
        ctx.flows, ctx.flow_params, ctx.context = flows, flow_params, context
        dev = x.device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        ctx.save_for_backward(h)
        ctx.ladj_dtype = ladj.dtype
        return h, ladj

    @staticmethod
    @once_differentiable
    def backward(ctx, g_y, g_ld):
        (y,) = ctx.saved_tensors
        if g_y is None:
            g_y = torch.zeros_like(y)
        if g_ld is None:
            g_ld = y.new_zeros(y.shape[0], dtype=ctx.ladj_dtype)
        context = ctx.context
        index = {id(p): i for i, p in enumerate(p for ps in ctx.flow_params for p in ps)}
        g_params: list[torch.Tensor | None] = [None] * len(index)
        g_context = None
        need_x_final = ctx.needs_input_grad[2]
        dev, ac_enabled, ac_dtype = ctx.autocast
        h = y.detach()
        flows = ctx.flows
        with torch.enable_grad(), torch.autocast(dev, dtype=ac_dtype, enabled=ac_enabled):
            for k in reversed(range(len(flows))):
                flow, params = flows[k], ctx.flow_params[k]
                need_x = k > 0 or need_x_final
                h, g_x, gc, gp = recompute_step(flow)(h, context, g_y, g_ld, params, need_x)
                for p, g in zip(params, gp):
                    if g is not None:
                        i = index[id(p)]
                        g_params[i] = g if g_params[i] is None else g_params[i] + g
                if gc is not None:
                    g_context = gc if g_context is None else g_context + gc
                g_y = g_x
        ctx.flows = ctx.flow_params = ctx.context = None
        return (None, None, g_y if need_x_final else None, g_context, *g_params)


def reversible_forward(flows: Sequence[nn.Module], x: torch.Tensor, context=None):
    """Apply ``flows`` in order storing no intermediate activations; returns ``(y, ladj)``.

    Every layer must have a cheap exact inverse (:func:`check_reversible`) and be deterministic.
    Gradients reach ``x``, a tensor ``context`` and every parameter of the flows.
    """
    flows = list(flows)
    check_reversible(flows)
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
    return _ReversibleFunction.apply(flows, flow_params, x, context, *params)
