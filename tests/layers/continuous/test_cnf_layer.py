"""The CNF layer under the bijection contract: ladj against slogdet, round trips, gradients, NFE, RNODE."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from glowlab.core import ContextError
from glowlab.layers.continuous import CNF, ODEMLP, ODEConvNet, nfe_counts, regularization_loss, reset_nfe

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

TIGHT = {"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}
FAST = {"method": "rk4", "step_size": 0.25}


def _vector_cnf(core_helpers, dim=3, scale=0.3, layer_type="concat", **kwargs):
    flow = CNF(ODEMLP(dim, (16, 16), layer_type=layer_type), event_dim=1, **{"trace": "exact", **kwargs})
    core_helpers.perturb_parameters(flow, scale)
    return flow


@pytest.mark.parametrize(("layer_type", "scale"), [("concat", 0.3), ("concatsquash", 1.0)])
def test_ladj_is_the_slogdet_of_the_solved_map_vectors(core_helpers, layer_type, scale):
    flow = _vector_cnf(core_helpers, scale=scale, layer_type=layer_type, end_time=1.3, **TIGHT)
    x = torch.randn(4, 3)
    _, ladj = flow(x)
    logabsdet, cross = core_helpers.jacobian_logdet(lambda v: flow(v)[0], x)
    assert cross < 1e-9  # adaptive steps are shared by the batch: only a tolerance-sized coupling
    assert ladj.abs().max() > 0.1, "the map is too close to volume preserving to test anything"
    torch.testing.assert_close(ladj, logabsdet, rtol=1e-6, atol=1e-9)


def test_ladj_is_the_slogdet_of_the_solved_map_images(core_helpers):
    flow = CNF(ODEConvNet(2, (4,)), event_dim=3, trace="exact", **TIGHT)
    core_helpers.perturb_parameters(flow, 0.3)
    x = torch.randn(2, 2, 2, 2)
    _, ladj = flow(x)
    logabsdet, _ = core_helpers.jacobian_logdet(lambda v: flow(v)[0], x)
    torch.testing.assert_close(ladj, logabsdet, rtol=1e-6, atol=1e-9)


def test_round_trip_and_inverse_ladj_is_minus_forward(core_helpers):
    flow = _vector_cnf(core_helpers, **TIGHT)
    x = torch.randn(6, 3)
    y, ladj = flow(x)
    x2, ladj_inv = flow.inverse(y)
    assert (y - x).abs().max() > 0.1
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-8)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=0, atol=1e-8)


def test_hutchinson_ladj_is_an_unbiased_estimate_of_the_exact_one(core_helpers):
    flow = _vector_cnf(core_helpers, **FAST)
    x = torch.randn(1, 3).expand(4000, 3).clone()
    with torch.no_grad():
        _, exact = flow(x[:1])
        flow.trace = "hutchinson"
        _, est = flow(x)
    stderr = est.std() / math.sqrt(len(est))
    assert est.std() > 1e-4
    assert abs(est.mean() - exact[0]) < 4 * stderr


def test_gradients_reach_every_parameter_and_the_learned_end_time(core_helpers):
    flow = _vector_cnf(core_helpers, **FAST)
    y, ladj = flow(torch.randn(5, 3))
    (y.square().sum() - ladj.sum()).backward()
    core_helpers.assert_every_parameter_has_gradient(flow)
    assert flow.dynamics.log_end_time.grad is not None


def test_fixed_end_time_is_a_buffer(core_helpers):
    flow = CNF(ODEMLP(2, (8,)), event_dim=1, end_time=0.5, train_end_time=False, **FAST)
    assert "dynamics.log_end_time" not in dict(flow.named_parameters())
    assert float(flow.end_time) == pytest.approx(0.5)


def test_adjoint_gives_the_same_gradients_as_direct_backpropagation(core_helpers):
    direct = _vector_cnf(core_helpers, rtol=1e-9, atol=1e-9)
    adjoint = copy.deepcopy(direct)
    adjoint.adjoint = True
    x = torch.randn(4, 3)
    grads = []
    for flow in (direct, adjoint):
        y, ladj = flow(x)
        (0.5 * y.square().sum() - ladj.sum()).backward()
        grads.append([p.grad.clone() for p in flow.parameters()])
    for g_direct, g_adjoint in zip(*grads, strict=True):
        torch.testing.assert_close(g_adjoint, g_direct, rtol=1e-5, atol=1e-7)


def test_nfe_counts_forward_and_backward_direct_and_adjoint(core_helpers):
    flow = _vector_cnf(core_helpers, **FAST)  # 4 rk4 steps of 4 evaluations
    y, ladj = flow(torch.randn(3, 3))
    assert (flow.nfe.forward, flow.nfe.backward) == (16, 0)
    (y.sum() + ladj.sum()).backward()
    assert (flow.nfe.forward, flow.nfe.backward) == (16, 16)
    flow.adjoint = True
    reset_nfe(flow)
    y, ladj = flow(torch.randn(3, 3))
    (y.sum() + ladj.sum()).backward()
    counts = nfe_counts(flow)
    assert counts["forward"] == 16 and counts["backward"] == 16  # the adjoint's backward rk4 solve
    assert counts["total_forward"] == 32 and counts["total_backward"] == 32
    with torch.no_grad():
        flow.inverse(torch.randn(3, 3))
    assert flow.nfe.forward == 32


def test_eval_uses_the_exact_trace_for_small_dimensions(core_helpers):
    flow = _vector_cnf(core_helpers, trace="hutchinson", exact_max_dim=3, **FAST)
    x = torch.randn(3, 3)
    flow.eval()
    with torch.no_grad():
        a, b = flow(x)[1], flow(x)[1]
    assert flow.last_trace == "exact"
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    flow.exact_max_dim = 2
    with torch.no_grad():
        flow(x)
    assert flow.last_trace == "hutchinson"


class _Scale(nn.Module):
    """``f(t, z) = a z``: the kinetic and Jacobian integrals have closed forms."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, t, z, context=None):
        return self.a * z


def test_rnode_terms_match_their_closed_forms():
    a, end, kw, jw = 0.7, 1.5, 0.3, 0.2
    flow = CNF(_Scale(a), event_dim=1, trace="exact", end_time=end, kinetic_weight=kw, jacobian_weight=jw, **TIGHT)
    x = torch.randn(5, 3)
    _, ladj = flow(x)
    torch.testing.assert_close(ladj, torch.full((5,), 3 * a * end), rtol=1e-8, atol=0)
    # per dimension (D = 3), RNODE's definitions: ∫ a² |x|² e^{2at} dt / (2D) and ∫ ‖a I‖_F² dt / D
    kinetic = a**2 * x.square().sum(1) * math.expm1(2 * a * end) / (2 * a) / (2 * 3)
    jacobian = torch.full((5,), 3 * a**2 * end / 3)
    reg = flow.regularization_loss()
    torch.testing.assert_close(reg, kw * kinetic.mean() + jw * jacobian.mean(), rtol=1e-7, atol=0)
    assert reg.requires_grad and flow.regularization_loss() is None  # read once
    flow.eval()
    flow(x)
    assert regularization_loss(flow) is None  # evaluation solves are not regularised


def test_state_dict_round_trip_gives_identical_outputs(core_helpers):
    flow = _vector_cnf(core_helpers, **FAST)
    other = CNF(ODEMLP(3, (16, 16)), event_dim=1, trace="exact", **FAST)
    other.load_state_dict(flow.state_dict())
    x = torch.randn(4, 3)
    with torch.no_grad():
        for a, b in zip(flow(x), other(x), strict=True):
            assert torch.equal(a, b)


def test_context_reaches_the_dynamics_and_is_checked():
    flow = CNF(ODEMLP(2, (8,), context_features=3), event_dim=1, trace="exact", **FAST)
    x, c = torch.randn(4, 2), torch.randn(4, 3)
    with torch.no_grad():
        assert not torch.allclose(flow(x, c)[0], flow(x, c + 1)[0])
    with pytest.raises(ContextError, match="context of shape"):
        flow(x)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "rk4"}, "needs step_size"),
    ({"method": "rk4", "step_size": 0.01, "max_num_steps": 10}, "more than max_num_steps"),
    ({"method": "bdf"}, "method must be"),
    ({"trace": "approximate"}, "trace must be"),
    ({"rtol": 0}, "rtol and atol must be positive"),
    ({"kinetic_weight": -1}, "weights must be >= 0"),
    ({"event_dim": 2}, "event_dim must be"),
])
def test_bad_arguments_say_what_to_do(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CNF(ODEMLP(2, (4,)), **kwargs)


def test_bad_inputs_say_what_to_do():
    flow = CNF(ODEMLP(2, (4,)), event_dim=1, **FAST)
    with pytest.raises(ValueError, match=r"expects its input as \[B, D\]"):
        flow(torch.randn(2, 2, 2))
    with pytest.raises(ValueError, match="float32 or float64"):
        flow(torch.randn(2, 2).half())


def test_layer_declares_a_numerical_inverse():
    flow = CNF(ODEMLP(2, (4,)), **FAST)
    assert flow.inverse_kind == "numerical" and not flow.inverse_is_cheap


def test_the_solve_ignores_autocast(core_helpers):
    flow = _vector_cnf(core_helpers, **FAST).float()
    x = torch.randn(4, 3, dtype=torch.float32)
    with torch.no_grad():
        y, ladj = flow(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y_auto, ladj_auto = flow(x)
    assert y_auto.dtype == ladj_auto.dtype == torch.float32
    torch.testing.assert_close(y_auto, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ladj_auto, ladj, rtol=1e-6, atol=1e-6)


def test_inference_mode_works_like_no_grad(core_helpers):
    flow = _vector_cnf(core_helpers, **FAST).eval()  # exact trace: the divergence needs autograd
    x = torch.randn(3, 3)
    with torch.no_grad():
        expected = flow(x)
    with torch.inference_mode():
        got = flow(x)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
