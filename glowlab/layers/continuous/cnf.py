"""The continuous normalizing flow layer: an ODE solve under the bijection contract.

``CNF`` maps ``x = z(0)`` to ``y = z(T)`` where ``dz/dt = f(t, z)``, and returns the log-determinant

    ladj = log|det ∂y/∂x| = ∫_0^T tr(∂f/∂z(t)) dt          ([B] nats)

integrated alongside the state (instantaneous change of variables, Chen et al. 2018). ``inverse``
solves from ``T`` back to ``0`` and returns ``-ladj``. Both are exact only to the solver tolerance,
so ``inverse_kind = "numerical"``; reversible memory saving refuses the layer, and the adjoint method
(``adjoint=True``: memory constant in the number of solver steps) is this family's memory saving.

The trace is exact (D vector-Jacobian products per evaluation) or Hutchinson's unbiased
**estimate** with one probe drawn per solve (FFJORD): with ``trace="hutchinson"`` the returned ladj
is itself a random, unbiased estimate. In eval mode ``eval_trace="auto"`` switches to the exact trace
when ``D <= exact_max_dim``.

Training regularisation (RNODE): in training mode with ``kinetic_weight`` or ``jacobian_weight`` > 0
each solve also integrates ``∫‖f‖²/(2D) dt`` and ``∫‖∂f/∂z‖_F²/D dt`` (per dimension, as RNODE
defines them; the Frobenius norm Hutchinson-estimated with the same probe, exact with the exact
trace), and :meth:`CNF.regularization_loss` returns
``kinetic_weight * mean_B(∫‖f‖²/(2D)) + jacobian_weight * mean_B(∫‖∂f/∂z‖_F²/D)`` for the training loss.

References:
    Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018.
    Grathwohl et al., "FFJORD", ICLR 2019. Finlay et al., "How to train your neural ODE", ICML 2020.

Example:
    >>> import torch
    >>> from glowlab.layers.continuous import CNF, ODEMLP
    >>> flow = CNF(ODEMLP(2, (16,)), event_dim=1, trace="exact", method="rk4", step_size=0.25)
    >>> x = torch.randn(5, 2)
    >>> y, ladj = flow(x)
    >>> x2, ladj_inv = flow.inverse(y)
    >>> bool(torch.allclose(x, x2, atol=1e-3)), bool(torch.allclose(ladj, -ladj_inv, atol=1e-3))
    (True, True)
    >>> flow.nfe.forward  # 2 solves of 4 rk4 steps, 4 evaluations each
    32
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from glowlab.core import Bijection, check_event
from glowlab.layers.continuous.divergence import PROBES, TRACE_KINDS, sample_probe
from glowlab.layers.continuous.solve import (
    Dynamics,
    NFECounter,
    ODESolveError,
    SolveFunc,
)

__all__ = ["ADAPTIVE_METHODS", "CNF", "FIXED_STEP_METHODS", "nfe_counts", "regularization_loss", "reset_nfe"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_STEP_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


class CNF(Bijection):
    """A continuous normalizing flow layer (see the module docstring).

    Args:
        net: the dynamics ``f(t, z, context) -> dz/dt``, same shape as ``z`` (e.g.
            :class:`~glowlab.layers.continuous.ODEMLP` or :class:`~glowlab.layers.continuous.ODEConvNet`).
        event_dim: 1 for vectors ``[B, D]``, 3 for images ``[B, C, H, W]``.
        trace: ``"exact"`` or ``"hutchinson"`` (an unbiased estimate), used in training mode.
        probe: Hutchinson probe, ``"rademacher"`` or ``"gaussian"``; one draw per solve.
        eval_trace: in eval mode: ``"auto"`` (exact if D <= ``exact_max_dim``, else ``trace``),
            ``"exact"`` or ``"hutchinson"``.
        end_time: initial integration time T; ``train_end_time`` makes it a parameter.
        method: a torchdiffeq solver; adaptive ``"dopri5"`` (default) ... or fixed-step ``"rk4"``, ...
        rtol, atol: tolerances of the adaptive solvers (also used by the adjoint's backward solve).
        step_size: fixed-step solvers' step on the normalised interval [0, 1] (``1/step_size`` steps).
        adjoint: back-propagate with the adjoint method (memory constant in the number of steps). Its
            gradients reach the dynamics' parameters only, not a ``context`` tensor.
        max_num_steps: steps one solve may take (accepted or not); beyond it :class:`ODESolveError`.
        kinetic_weight, jacobian_weight: RNODE weights (0 disables).
    """

    inverse_kind = "numerical"

    def __init__(self, net: nn.Module, event_dim: int = 1, trace: str = "hutchinson", probe: str = "rademacher",
                 eval_trace: str = "auto", exact_max_dim: int = 64, end_time: float = 1.0,
                 train_end_time: bool = True, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 step_size: float | None = None, adjoint: bool = False, max_num_steps: int = 1000,
                 kinetic_weight: float = 0.0, jacobian_weight: float = 0.0):
        super().__init__()
        if event_dim not in (1, 3):
            raise ValueError(f"event_dim must be 1 (vectors [B, D]) or 3 (images [B, C, H, W]), got {event_dim!r}")
        if trace not in TRACE_KINDS:
            raise ValueError(f"trace must be one of {TRACE_KINDS}, got {trace!r}")
        if eval_trace not in (*TRACE_KINDS, "auto"):
            raise ValueError(f"eval_trace must be 'auto', 'exact' or 'hutchinson', got {eval_trace!r}")
        if probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
        if method not in ADAPTIVE_METHODS + FIXED_STEP_METHODS:
            raise ValueError(f"method must be an adaptive solver {ADAPTIVE_METHODS} or a fixed-step one "
                             f"{FIXED_STEP_METHODS}, got {method!r}")
        if not isinstance(max_num_steps, int) or max_num_steps < 1:
            raise ValueError(f"max_num_steps must be a positive integer, got {max_num_steps!r}")
        if method in FIXED_STEP_METHODS:
            if step_size is None or not 0 < step_size <= 1:
                raise ValueError(f"the fixed-step solver {method!r} needs step_size in (0, 1] (a fraction of the "
                                 f"normalised interval [0, 1]), got {step_size!r}")
            if math.ceil(1 / step_size - 1e-9) > max_num_steps:
                raise ValueError(f"step_size={step_size} needs {math.ceil(1 / step_size)} steps, more than "
                                 f"max_num_steps={max_num_steps}; raise max_num_steps or the step size")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={rtol!r}, atol={atol!r}")
        if kinetic_weight < 0 or jacobian_weight < 0:
            raise ValueError(f"regularisation weights must be >= 0, got kinetic_weight={kinetic_weight!r}, "
                             f"jacobian_weight={jacobian_weight!r}")
        self.event_dim = event_dim
        self.dynamics = Dynamics(net, end_time, train_end_time)
        self.trace, self.probe, self.eval_trace, self.exact_max_dim = trace, probe, eval_trace, exact_max_dim
        self.method, self.rtol, self.atol, self.step_size = method, float(rtol), float(atol), step_size
        self.adjoint, self.max_num_steps = adjoint, max_num_steps
        self.kinetic_weight, self.jacobian_weight = float(kinetic_weight), float(jacobian_weight)
        self.nfe = NFECounter()
        self._pending_reg: torch.Tensor | None = None
        self.last_trace: str | None = None  # the trace of the latest solve ("exact" / "hutchinson")

    @property
    def end_time(self) -> torch.Tensor:
        """The integration time T (learned when ``train_end_time``)."""
        return self.dynamics.end_time

    def current_trace(self, x: torch.Tensor) -> str:
        """The trace the next solve on ``x`` uses: ``trace`` in training, ``eval_trace`` in eval mode."""
        if self.training:
            return self.trace
        if self.eval_trace != "auto":
            return self.eval_trace
        return "exact" if x[0].numel() <= self.exact_max_dim else self.trace

    def _advice(self) -> str:
        adaptive = self.method in ADAPTIVE_METHODS
        setting = f"rtol={self.rtol:g}, atol={self.atol:g}" if adaptive else f"step_size={self.step_size:g}"
        tips = [f" It ran method={self.method!r}, {setting}, max_num_steps={self.max_num_steps}. To fix it:"]
        if adaptive:
            tips.append(" loosen the tolerances (e.g. rtol=atol=1e-4), raise max_num_steps,")
        else:
            tips.append(" lower step_size,")
        if self.kinetic_weight == 0 and self.jacobian_weight == 0:
            tips.append(" regularise the dynamics (kinetic_weight=0.01, jacobian_weight=0.01, RNODE),")
        else:
            tips.append(" raise kinetic_weight / jacobian_weight,")
        if adaptive:
            tips.append(" use a fixed-step solver (method='rk4', step_size=0.25), whose cost is bounded,")
        tips.append(" or lower the learning rate / clip gradients if this appears mid-training.")
        return "".join(tips)

    def _solve(self, x: torch.Tensor, context, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        check_event(self, x, self.event_dim)
        if torch.is_inference_mode_enabled():  # the divergence needs autograd: leave inference mode
            with torch.inference_mode(False), torch.no_grad():
                context = context.clone() if isinstance(context, torch.Tensor) else context
                return self._solve(x.clone(), context, reverse)
        if x.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"CNF solves in float32 or float64, got {x.dtype}; cast the input (the solve runs "
                             f"without autocast)")
        trace = self.last_trace = self.current_trace(x)
        regularize = (self.training and torch.is_grad_enabled()
                      and (self.kinetic_weight > 0 or self.jacobian_weight > 0))
        func = SolveFunc(self.dynamics, self.nfe, trace, self.max_num_steps, self._advice(),
                         probe=sample_probe(x, self.probe) if trace == "hutchinson" else None, context=context,
                         regularize=regularize, need_frobenius=self.jacobian_weight > 0,
                         count_backward=not self.adjoint)
        zeros = x.new_zeros(x.shape[0])
        state = (x, zeros) + ((zeros, zeros) if regularize else ())
        t = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=x.dtype, device=x.device)
        kwargs = {"rtol": self.rtol, "atol": self.atol, "method": self.method}
        if self.method in FIXED_STEP_METHODS:
            kwargs["options"] = {"step_size": self.step_size}
        else:  # torchdiffeq's own limit as a backstop; SolveFunc raises first
            kwargs["options"] = {"max_num_steps": self.max_num_steps + 2}
        try:  # the solver's error control needs float32 or wider: no autocast inside the solve
            with torch.autocast(x.device.type, enabled=False):
                if self.adjoint:
                    params = tuple(self.dynamics.parameters())
                    out = odeint_adjoint(func, state, t, adjoint_params=params, **kwargs)
                else:
                    out = odeint(func, state, t, **kwargs)
        except AssertionError as err:  # torchdiffeq's own checks (non-finite state, step limit)
            raise ODESolveError(f"torchdiffeq stopped: {err}.{self._advice()}") from err
        finally:
            func.finish_forward()
        y, ladj = out[0][-1], out[1][-1]
        if regularize:
            sign = -1.0 if reverse else 1.0  # integrals over s from 1 to 0 come out negative
            reg = sign * (self.kinetic_weight * out[2][-1].mean() + self.jacobian_weight * out[3][-1].mean())
            self._pending_reg = reg if self._pending_reg is None else self._pending_reg + reg
        return y, ladj

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x -> (z(T), ladj [B])``: integrate from 0 to T."""
        return self._solve(x, context, reverse=False)

    def inverse(self, y: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``y -> (z(0), ladj [B])``: integrate from T back to 0; ladj is ``log|det ∂x/∂y|``."""
        return self._solve(y, context, reverse=True)

    def regularization_loss(self) -> torch.Tensor | None:
        """The weighted RNODE terms of the solves since the last call (a scalar), or None; clears them."""
        reg, self._pending_reg = self._pending_reg, None
        return reg

    def extra_repr(self) -> str:
        return (f"event_dim={self.event_dim}, trace={self.trace!r}, method={self.method!r}, rtol={self.rtol:g}, "
                f"atol={self.atol:g}, adjoint={self.adjoint}, max_num_steps={self.max_num_steps}")


def _cnfs(module: nn.Module) -> list[CNF]:
    return [m for m in module.modules() if isinstance(m, CNF)]


def nfe_counts(module: nn.Module) -> dict[str, int]:
    """NFE summed over every :class:`CNF` in ``module``: ``forward``/``backward`` since the last
    :func:`reset_nfe`, ``total_forward``/``total_backward`` since construction."""
    keys = ("forward", "backward", "total_forward", "total_backward")
    return {k: sum(getattr(c.nfe, k) for c in _cnfs(module)) for k in keys}


def reset_nfe(module: nn.Module) -> None:
    """Zero the since-reset NFE counters of every :class:`CNF` in ``module``."""
    for c in _cnfs(module):
        c.nfe.reset()


def regularization_loss(module: nn.Module) -> torch.Tensor | None:
    """The sum of :meth:`CNF.regularization_loss` over ``module``'s CNFs (None if none regularised)."""
    parts = [r for r in (c.regularization_loss() for c in _cnfs(module)) if r is not None]
    return sum(parts[1:], parts[0]) if parts else None


