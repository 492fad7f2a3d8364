"""The divergence of CNF dynamics: the exact one against autograd's Jacobian, Hutchinson's unbiasedness."""

from __future__ import annotations

import pytest
import torch

from glowlab.layers.continuous import ODEMLP, exact_divergence, hutchinson_divergence, sample_probe

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


def _jacobians(net, t, z):
    """``[B, D, D]`` per-sample Jacobians of ``z -> net(t, z)`` (samples are independent)."""
    jac = torch.autograd.functional.jacobian(lambda v: net(t, v).sum(0), z)  # [D, B, D]
    return jac.permute(1, 0, 2)


def test_exact_divergence_and_frobenius_match_the_autograd_jacobian(core_helpers):
    net = ODEMLP(4, (16, 16))
    core_helpers.perturb_parameters(net, 0.3)
    t = torch.tensor(0.3)
    z = torch.randn(5, 4, requires_grad=True)
    div, frob = exact_divergence(net(t, z), z)
    jac = _jacobians(net, t, z.detach())
    torch.testing.assert_close(div, torch.diagonal(jac, dim1=1, dim2=2).sum(-1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(frob, jac.square().sum((1, 2)), rtol=1e-10, atol=1e-12)


def test_exact_divergence_of_images_matches_the_autograd_jacobian():
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    z = torch.randn(3, 2, 3, 3, requires_grad=True)
    f = torch.tanh(conv(z))
    div, _ = exact_divergence(f, z, need_frobenius=False)
    jac = torch.autograd.functional.jacobian(lambda v: torch.tanh(conv(v)).sum(0), z.detach())
    jac = jac.reshape(18, 3, 18).permute(1, 0, 2)
    torch.testing.assert_close(div, torch.diagonal(jac, dim1=1, dim2=2).sum(-1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_an_unbiased_estimate_of_the_trace_and_frobenius_norm(probe, core_helpers):
    net = ODEMLP(3, (16,))
    core_helpers.perturb_parameters(net, 0.5)
    t = torch.tensor(0.7)
    n = 20000  # one point, many probes: repeat it along the batch
    z = torch.randn(1, 3).expand(n, 3).clone().requires_grad_(True)
    f = net(t, z)
    est, frob_est = hutchinson_divergence(f, z, sample_probe(z, probe), need_frobenius=True)
    jac = _jacobians(net, t, z[:1].detach())[0]
    exact, frob = torch.trace(jac), jac.square().sum()
    for values, truth in ((est, exact), (frob_est, frob)):
        stderr = values.std() / n**0.5
        assert stderr > 0, "the estimate does not vary: it cannot be a probe-based estimate"
        assert abs(values.mean() - truth) < 4 * stderr, (float(values.mean()), float(truth), float(stderr))
    # and it is an estimate: single draws differ from the trace (unless the Jacobian were diagonal)
    assert (est - exact).abs().max() > 1e-6


def test_rademacher_probes_are_plus_minus_one_and_bad_kinds_are_refused():
    e = sample_probe(torch.empty(1000, 3), "rademacher")
    assert set(e.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(e.mean())) < 0.1
    with pytest.raises(ValueError, match="probe must be one of"):
        sample_probe(torch.empty(2), "uniform")
