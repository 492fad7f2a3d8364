"""One ODE solve of a continuous flow: the augmented dynamics, step limits, NFE counters, errors.

The state integrated over the normalised time ``s ∈ [0, 1]`` is ``(z, ℓ[, k, j])`` with

    dz/ds = T f(sT, z),   dℓ/ds = T tr(∂f/∂z),   dk/ds = T ‖f‖² / (2D),   dj/ds = T ‖∂f/∂z‖_F² / D,

so that at ``s = 1``: ``z(1)`` is the flow's output, ``ℓ = log|det ∂z(1)/∂z(0)|`` (nats) and ``k``, ``j``
are RNODE's kinetic energy and Jacobian-norm integrals over real time ``t = sT ∈ [0, T]``, per
dimension (``D`` elements of one sample) as Finlay et al. (2020) define them, so that their weights
(0.01 each in the paper) mean the same next to a loss in bits/dim at any image size. Rescaling
time this way lets the end time ``T`` be a learned parameter of the dynamics (FFJORD) while the solver
always integrates over a fixed interval. Solving from ``s = 1`` to ``0`` inverts the map, and ``ℓ`` then
comes out as minus the forward log-determinant.

:class:`SolveFunc` holds everything one solve needs (probe, context, options) so that an adjoint
backward pass that runs later still sees that solve's probe. It counts function evaluations (NFE)
and steps, and raises :class:`ODESolveError` as soon as a solve exceeds ``max_num_steps`` or its
step size underflows (torchdiffeq alone would loop for up to 2^31 steps).

Example:
    >>> import torch
    >>> from torchdiffeq import odeint
    >>> class Linear(torch.nn.Module):
    ...     def forward(self, t, z, context=None):
    ...         return -z
    >>> dyn = Dynamics(Linear(), end_time=1.0, train_end_time=False)
    >>> func = SolveFunc(dyn, NFECounter(), trace="exact", max_num_steps=100, advice="")
    >>> z, ladj = odeint(func, (torch.ones(2, 3), torch.zeros(2)), torch.tensor([0.0, 1.0]), method="rk4",
    ...                  options={"step_size": 0.1})
    >>> round(float(ladj[-1, 0].detach()), 6)  # log|det| of z -> exp(-1) z in 3 dims
    -3.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from glowlab.core import InversionError
from glowlab.layers.continuous.divergence import exact_divergence, hutchinson_divergence

__all__ = ["Dynamics", "NFECounter", "ODESolveError", "SolveFunc"]


class ODESolveError(InversionError):
    """An ODE solve of a continuous flow did not finish: it reached ``max_num_steps`` or its step
    size underflowed, usually because the learned dynamics became stiff. The message says what to
    change (tolerances, step limit, regularisation, a fixed-step solver)."""


@dataclass
class NFECounter:
    """Function evaluations of a continuous flow's dynamics.

    ``forward``: evaluations made while solving (both directions, ``forward`` and ``inverse``);
    ``backward``: evaluations back-propagated through (direct mode) or made by the adjoint's backward
    solve. Both count since the last :meth:`reset`; the ``total_*`` counts never reset.
    """

    forward: int = 0
    backward: int = 0
    total_forward: int = 0
    total_backward: int = 0

    def add(self, phase: str, n: int = 1) -> None:
        if phase == "forward":
            self.forward += n
            self.total_forward += n
        else:
            self.backward += n
            self.total_backward += n

    def reset(self) -> None:
        self.forward = self.backward = 0


class _CountOnBackward(torch.autograd.Function):
    """Identity whose backward pass adds one to a counter's backward NFE (direct back-propagation)."""

    @staticmethod
    def forward(ctx, counter, x):
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.counter.add("backward")
        return None, grad


class Dynamics(nn.Module):
    """The learned part of a continuous flow: the network ``f(t, z, context)`` and the end time ``T``.

    ``T = exp(log_end_time)`` is a parameter when ``train_end_time`` (FFJORD's learned integration
    time), else a buffer.
    """

    def __init__(self, net: nn.Module, end_time: float = 1.0, train_end_time: bool = True):
        super().__init__()
        if not end_time > 0 or not math.isfinite(end_time):
            raise ValueError(f"end_time must be a positive number, got {end_time!r}")
        self.net = net
        log_t = torch.tensor(math.log(end_time))
        if train_end_time:
            self.log_end_time = nn.Parameter(log_t)
        else:
            self.register_buffer("log_end_time", log_t)

    @property
    def end_time(self) -> torch.Tensor:
        """The integration time ``T`` (a scalar tensor)."""
        return self.log_end_time.exp()


class SolveFunc(nn.Module):
    """The augmented right-hand side of one solve (see the module docstring), with its settings.

    Args:
        dynamics: the shared :class:`Dynamics`.
        counter: where evaluations are counted.
        trace: ``"exact"`` or ``"hutchinson"`` (then ``probe`` is the solve's one noise draw).
        max_num_steps: steps (accepted or rejected) one solve may take before :class:`ODESolveError`.
        advice: appended to error messages (what to change).
        regularize: also integrate ``‖f‖²`` and ``‖∂f/∂z‖_F²`` (two more ``[B]`` states).
        count_backward: count back-propagated evaluations (direct mode; the adjoint's backward solve
            is counted as it calls this function).
    """

    def __init__(self, dynamics: Dynamics, counter: NFECounter, trace: str, max_num_steps: int, advice: str,
                 probe: torch.Tensor | None = None, context=None, regularize: bool = False,
                 need_frobenius: bool = False, count_backward: bool = False):
        super().__init__()
        self.dynamics = dynamics
        self.counter, self.trace, self.probe, self.context = counter, trace, probe, context
        self.max_num_steps, self.advice = max_num_steps, advice
        self.regularize, self.need_frobenius, self.count_backward = regularize, need_frobenius, count_backward
        self.phase = "forward"  # set to "backward" once the forward solve has returned
        self.steps = 0

    def finish_forward(self) -> None:
        """Mark the forward solve as done: later evaluations (an adjoint backward) count as backward."""
        self.phase, self.steps = "backward", 0

    def forward(self, s: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.counter.add(self.phase)
        grad_on = torch.is_grad_enabled()
        z = state[0]
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            end = self.dynamics.end_time.to(z)
            f = self.dynamics.net(s.to(z) * end, z, self.context)
            need_frob = self.regularize and self.need_frobenius
            if self.trace == "exact":
                div, frob = exact_divergence(f, z, create_graph=grad_on, need_frobenius=need_frob)
            else:
                div, frob = hutchinson_divergence(f, z, self.probe, create_graph=grad_on, need_frobenius=need_frob)
        dz = end * f
        if grad_on and self.count_backward:
            dz = _CountOnBackward.apply(self.counter, dz)
        out = [dz, end * div.to(state[1])]
        if self.regularize:
            # per dimension, with the kinetic energy's 1/2, as RNODE defines them: its weights (0.01) are
            # set against a loss in bits/dim, so sums over D would penalise a 784-pixel image ~10^3x harder
            dims = f[0].numel()
            out.append(end * f.flatten(1).square().sum(1) / (2 * dims))
            out.append(end * frob / dims if frob is not None else torch.zeros_like(div))
        if not grad_on:
            out = [o.detach() for o in out]
        return tuple(out)

    # torchdiffeq calls these before every step, accepted or not, of the forward / adjoint solve
    def callback_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.steps += 1
        t0, dt = t0.detach(), dt.detach()
        if self.steps > self.max_num_steps:
            raise ODESolveError(f"the ODE solve of a continuous flow took more than max_num_steps="
                                f"{self.max_num_steps} steps (at s={float(t0):.4g} of [0, 1], step size "
                                f"{float(dt):.3g}, {self.phase} solve).{self.advice}")
        tiny = 8 * torch.finfo(dt.dtype).eps * max(1.0, abs(float(t0)))
        if not abs(float(dt)) > tiny:
            raise ODESolveError(f"the step size of an ODE solve of a continuous flow underflowed to {float(dt):.3g} "
                                f"at s={float(t0):.4g} of [0, 1] after {self.steps} steps ({self.phase} solve): the "
                                f"dynamics are too stiff or not finite.{self.advice}")
        parts = y0 if isinstance(y0, (tuple, list)) else (y0,)
        if not all(bool(torch.isfinite(p).all()) for p in parts):
            raise ODESolveError(f"the state of an ODE solve of a continuous flow became non-finite at "
                                f"s={float(t0):.4g} ({self.phase} solve).{self.advice}")

    callback_step_adjoint = callback_step
