"""A CNF solve that cannot finish stops quickly with an ODESolveError saying what to change."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from glowlab.core import InversionError
from glowlab.layers.continuous import CNF, ODESolveError

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


class _Blowup(nn.Module):
    """``dz/dt = z²``: from z(0) = 2 the solution reaches infinity at t = 0.5."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(1.0))

    def forward(self, t, z, context=None):
        return self.k * z * z


class _Stiff(nn.Module):
    """``dz/dt = k tanh(z)`` with k = -1e6: an explicit adaptive solver needs ~|k| steps."""

    def __init__(self, k: float = -1e6):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def forward(self, t, z, context=None):
        return self.k * torch.tanh(z)


class _Linear(_Stiff):
    """``dz/dt = k z``, unbounded: an explicit fixed step far beyond 2/|k| overflows."""

    def forward(self, t, z, context=None):
        return self.k * z


def _raises_quickly(flow, x, match, seconds=10.0, backward=False):
    start = time.perf_counter()
    with pytest.raises(ODESolveError, match=match) as info:
        y, ladj = flow(x)
        if backward:
            (y.sum() + ladj.sum()).backward()
    assert time.perf_counter() - start < seconds
    return str(info.value)


def test_step_limit_on_a_stiff_ode_stops_with_advice():
    flow = CNF(_Stiff(), trace="exact", max_num_steps=50)
    message = _raises_quickly(flow, torch.ones(2, 2), "more than max_num_steps=50 steps")
    for advice in ("rtol=atol=1e-4", "kinetic_weight", "method='rk4'", "raise max_num_steps"):
        assert advice in message
    assert flow.nfe.forward < 50 * 6 + 10  # stopped at the limit (6 evaluations per dopri5 step)
    assert issubclass(ODESolveError, InversionError)


def test_step_limit_on_an_explosive_ode():
    flow = CNF(_Blowup(), trace="exact", train_end_time=False, max_num_steps=20)
    _raises_quickly(flow, torch.full((2, 2), 2.0), "max_num_steps=20")


def test_step_size_underflow_stops_instead_of_hanging():
    flow = CNF(_Blowup(), trace="exact", train_end_time=False, max_num_steps=10**6)
    message = _raises_quickly(flow, torch.full((2, 2), 2.0), "underflowed")
    assert "at s=0.5" in message  # the blow-up time


def test_fixed_step_solver_reports_a_non_finite_state():
    flow = CNF(_Linear(-1e7), trace="exact", method="rk4", step_size=0.05)
    message = _raises_quickly(flow, torch.ones(2, 2), "non-finite")
    assert "lower step_size" in message and "rtol" not in message


def test_the_adjoint_backward_solve_is_limited_too():
    # the forward solve takes ~57 dopri5 steps, the adjoint's backward one ~113
    flow = CNF(_Stiff(-30.0), trace="exact", adjoint=True, rtol=1e-8, atol=1e-8, max_num_steps=80)
    _raises_quickly(flow, torch.ones(2, 2), "backward solve", backward=True)
    assert flow.nfe.forward > 0 and flow.nfe.backward > 0
