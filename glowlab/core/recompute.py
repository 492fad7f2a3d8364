"""The reversible-backpropagation step of one layer: rebuild its input from its output, then backpropagate.

Reversible backpropagation (:mod:`glowlab.execution.reversible`) stores only a sequence's output.
In the backward pass it asks each layer, last to first, for its *recompute step*:

``reconstruct_input_and_backward(y, context, grad_y, grad_ladj, params, need_input_grad)
-> (x, grad_x, grad_context, grad_params)``

* ``x``: the layer's input rebuilt from its output ``y`` (no graph);
* ``grad_x``: the loss's gradient w.r.t. ``x`` (None unless ``need_input_grad``);
* ``grad_context``: w.r.t. ``context`` (None unless it is a tensor that requires grad);
* ``grad_params``: w.r.t. each of ``params`` (None where unused),

given the gradients ``grad_y`` and ``grad_ladj`` of the loss w.r.t. the layer's outputs. It runs
with grad enabled. A layer may implement it (a coupling shares one network evaluation between the
inverse and the recomputed forward); :func:`recompute_by_inverse` is the default for the others.
Only layers whose inverse is cheap and exact (``inverse_is_cheap``) may take part.

Example:
    >>> import torch
    >>> from glowlab.layers import ActNorm
    >>> norm = ActNorm(2)
    >>> _ = norm(torch.randn(4, 2))  # initialise
    >>> y = torch.randn(3, 2)
    >>> x, g_x, _, g_p = recompute_by_inverse(norm, y, None, torch.ones(3, 2), torch.zeros(3),
    ...                                       list(norm.parameters()), True)
    >>> bool(torch.allclose(norm(x)[0], y)), g_x.shape, len(g_p)
    (True, torch.Size([3, 2]), 2)
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch

__all__ = ["Recomputable", "recompute_by_inverse", "grads_of", "context_input"]


@runtime_checkable
class Recomputable(Protocol):
    """A layer with its own reversible-backpropagation step (see the module docstring)."""

    def reconstruct_input_and_backward(self, y: torch.Tensor, context, grad_y: torch.Tensor,
                                       grad_ladj: torch.Tensor, params: Sequence[torch.Tensor],
                                       need_input_grad: bool):  # pragma: no cover - protocol
        ...


def grads_of(outputs, inputs, grad_outputs) -> list:
    """``torch.autograd.grad`` over the outputs that need grad; None for unused inputs."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    if not pairs or not inputs:
        return [None] * len(inputs)
    return list(torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True))


def context_input(context):
    """``context`` if it is a tensor that needs a gradient, else None."""
    return context if isinstance(context, torch.Tensor) and context.requires_grad else None


def recompute_by_inverse(layer, y: torch.Tensor, context, grad_y: torch.Tensor, grad_ladj: torch.Tensor,
                         params: Sequence[torch.Tensor], need_input_grad: bool):
    """The default recompute step: ``layer.inverse`` without a graph, then backpropagate through a
    re-run of ``layer.forward`` (two passes of the layer)."""
    with torch.no_grad():
        x, _ = layer.inverse(y, context)
    x_leaf = x.detach().requires_grad_(need_input_grad)
    out, ladj = layer(x_leaf, context)
    c = context_input(context)
    inputs = ([x_leaf] if need_input_grad else []) + ([c] if c is not None else []) + list(params)
    grads = grads_of([out, ladj], inputs, [grad_y, grad_ladj])
    g_x = grads.pop(0) if need_input_grad else None
    g_c = grads.pop(0) if c is not None else None
    return x.detach(), g_x, g_c, grads
