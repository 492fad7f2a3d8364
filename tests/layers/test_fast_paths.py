"""The performance paths compute the same function as the plain one: folded ActNorm in the coupling
networks, chunked no-grad inference, the fast log-sigmoid, cached eval weights, torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glowlab.flows import InvConv1x1LU
from glowlab.layers.coupling import nets
from glowlab.layers.coupling.affine import log_sigmoid
from glowlab.layers.coupling.nets import CouplingNet
from glowlab.models import Glow
from glowlab.optim import make_optimizer, track_in_place_updates


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _perturbed_net(seed=0):
    torch.manual_seed(seed)
    net = CouplingNet(6, 12, hidden_channels=16)
    net(torch.randn(8, 6, 5, 5))  # ActNorm initialisation (unfolded path)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("train", [True, False])
def test_folded_coupling_net_matches_layer_by_layer(float64, train):
    net = _perturbed_net().train(train)
    x = torch.randn(4, 6, 5, 5, requires_grad=True)
    ref = net.net(x)  # the plain Sequential: conv, actnorm, relu, conv, actnorm, relu, zero conv
    out = net(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *net.parameters()])
    g_out = torch.autograd.grad(out.square().sum(), [x, *net.parameters()])
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_uninitialised_actnorm_runs_unfolded():
    torch.manual_seed(0)
    net = CouplingNet(6, 12, hidden_channels=16)
    net(torch.randn(8, 6, 5, 5) * 3 + 1)
    norms = [m for m in net.modules() if isinstance(m, nets.ActNorm)]
    assert all(n.is_initialized() for n in norms)
    assert any(n.log_scale.abs().max() > 0.1 for n in norms)


def test_chunked_inference_matches_whole_batch(float64, monkeypatch):
    net = _perturbed_net().eval()
    x = torch.randn(7, 6, 5, 5)
    with torch.no_grad():
        whole = net(x)
        monkeypatch.setattr(nets, "_CHUNK_BYTES", 2 * 16 * 5 * 5 * 8)  # 2 images per chunk
        assert nets._inference_chunk(x, 16) == 2
        chunked = net(x)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    assert nets._inference_chunk(x, 16) == 7  # with grad enabled: the whole batch


def test_log_sigmoid_matches_reference():
    z64 = torch.cat([torch.linspace(-200, 200, 40001, dtype=torch.float64), torch.tensor([0.0, -60.0, 60.0])])
    ref = F.logsigmoid(z64)
    for dtype, atol in [(torch.float64, 1e-14), (torch.float32, 1e-5)]:
        z = z64.to(dtype).requires_grad_()
        out = log_sigmoid(z)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), F.logsigmoid(z.double()), rtol=1e-6, atol=atol)
        (g,) = torch.autograd.grad(out.sum(), z)
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g.double(), torch.sigmoid(-z.double()), rtol=1e-5, atol=atol)
    torch.testing.assert_close(log_sigmoid(z64), ref, rtol=1e-12, atol=1e-14)
    # second derivatives exist (composite of differentiable ops)
    z = torch.tensor([-70.0, -3.0, 0.5, 40.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(log_sigmoid(z).sum(), z, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), z)
    s = torch.sigmoid(z)
    torch.testing.assert_close(h, -s * (1 - s))


def test_cached_eval_weight_invalidated_by_fused_adam_step():
    """The eval cache of the 1x1 conv notices in-place updates of the fused/foreach optimisers."""
    torch.manual_seed(0)
    conv = InvConv1x1LU(4)
    x = torch.randn(2, 4, 3, 3)
    for kwargs in ({"fused": True}, {"foreach": True}):
        opt = torch.optim.Adam(conv.parameters(), lr=0.1, **kwargs)
        conv.eval()
        with torch.no_grad():
            before = conv(x)[0]
        conv.train()
        opt.zero_grad()
        conv(x)[0].square().sum().backward()
        opt.step()
        conv.eval()
        with torch.no_grad():
            after, _ = conv(x)
            torch.testing.assert_close(conv.inverse(after)[0], x, rtol=1e-5, atol=1e-5)
        conv.train()
        expected, _ = conv(x)
        assert not torch.allclose(after, before)
        torch.testing.assert_close(after, expected.detach())


@pytest.mark.parametrize("how", ["make_optimizer", "track_in_place_updates", "invalidate_cache"])
def test_cached_eval_weight_invalidated_by_fused_step_in_eval_mode(how):
    """A fused optimiser step taken while the module stays in eval mode (no train()/eval() switch
    drops the cache, and the fused kernel leaves version counters alone) still invalidates it: the
    training optimiser (glowlab.optim.make_optimizer) bumps the versions through a hook of its own;
    a user's own fused optimiser does so after track_in_place_updates, or the user invalidates."""
    torch.manual_seed(0)
    conv = InvConv1x1LU(4).eval()
    x = torch.randn(2, 4, 3, 3)
    if how == "make_optimizer":
        opt = make_optimizer("adam", conv.parameters(), lr=0.1, implementation="fused")
    else:
        opt = torch.optim.Adam(conv.parameters(), lr=0.1, fused=True)
        if how == "track_in_place_updates":
            track_in_place_updates(opt)
    with torch.no_grad():
        before = conv(x)[0]  # fills the cache
    conv(x)[0].square().sum().backward()  # grad enabled: computed afresh, not from the cache
    opt.step()
    if how == "invalidate_cache":
        conv.invalidate_cache()
    with torch.no_grad():
        after = conv(x)[0]
        w, _ = conv._weight_and_logabsdet()
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, torch.einsum("oc,bchw->bohw", w, x))


def test_untracked_fused_step_in_eval_mode_is_the_documented_limitation():
    """Why the hook is needed: a bare fused step leaves the version counters (the cache key) as they
    were, so without track_in_place_updates/invalidate_cache the eval cache is stale (documented
    in glowlab.layers.linear.invconv)."""
    torch.manual_seed(0)
    conv = InvConv1x1LU(4).eval()
    opt = torch.optim.Adam(conv.parameters(), lr=0.1, fused=True)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        before = conv(x)[0]
    conv(x)[0].square().sum().backward()
    versions = [p._version for p in conv.parameters()]
    opt.step()
    assert [p._version for p in conv.parameters()] == versions
    with torch.no_grad():
        assert torch.equal(conv(x)[0], before)  # stale, as documented


def test_no_process_wide_optimizer_hook():
    """Importing the layers registers no global optimiser hook (issue 9: no hidden global state)."""
    from torch.optim import optimizer as torch_optimizer

    import glowlab.layers  # noqa: F401

    assert not torch_optimizer._global_optimizer_post_hooks
    assert not torch_optimizer._global_optimizer_pre_hooks


@pytest.mark.slow
def test_compiled_model_matches_eager():
    """``model.compile_levels()`` (torch.compile of each level) gives eager's log_prob and gradients."""
    torch.manual_seed(0)
    model = Glow((3, 8, 8), levels=2, depth=2, hidden_channels=8)
    x = torch.rand(4, 3, 8, 8) - 0.5
    model.log_prob(x)  # ActNorm init, eagerly
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref = model.log_prob(x)
    g_ref = torch.autograd.grad(ref.sum(), list(model.parameters()))
    model.compile_levels()
    out = model.log_prob(x)
    g_out = torch.autograd.grad(out.sum(), list(model.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    for a, b in zip(g_out, g_ref):
        assert ((a - b).norm() / b.norm()) < 1e-4
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x), ref.detach(), rtol=1e-5, atol=1e-4)
