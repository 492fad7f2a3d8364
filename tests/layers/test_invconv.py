"""Invertible 1x1 convolutions: orthogonal init, the LU parametrisation and the eval-time cache."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from glowlab.flows import InvConv1x1, InvConv1x1LU

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

conv_classes = pytest.mark.parametrize("conv_cls", [InvConv1x1, InvConv1x1LU], ids=["plain", "lu"])


def weight(conv) -> torch.Tensor:
    """The current ``[C, C]`` weight, computed from the parameters (no cache)."""
    return conv._weight_and_logabsdet()[0].detach()


def reference_output(conv, x):
    """``W x`` per pixel and ``H * W * log|det W|`` computed independently of the layer."""
    w = weight(conv)
    return F.conv2d(x, w[:, :, None, None]), x.shape[2] * x.shape[3] * torch.linalg.slogdet(w).logabsdet


@conv_classes
def test_initial_weight_is_orthogonal(conv_cls, tol):
    """W starts as a random orthogonal matrix: W W^T = I, so the initial logdet is 0."""
    conv = conv_cls(6)
    w = weight(conv)
    torch.testing.assert_close(w @ w.T, torch.eye(6), rtol=0, atol=tol.round_trip_atol)
    assert not torch.allclose(w.abs(), torch.eye(6))  # random, not a permutation
    _, logdet = conv(torch.randn(2, 6, 3, 3))
    torch.testing.assert_close(logdet, torch.zeros(2), rtol=0, atol=tol.logdet_atol)


def test_lu_weight_is_p_l_u_and_logdet_is_sum_of_log_s(core_helpers):
    """LU: W = P (L + I) (U + diag(sign * exp(log_s))) with triangular L, U; logdet = H W sum(log_s)."""
    conv = InvConv1x1LU(5)
    core_helpers.perturb_parameters(conv, scale=0.3)
    lower = torch.tril(conv.lower.detach(), -1) + torch.eye(5)
    upper = torch.triu(conv.upper.detach(), 1) + torch.diag(conv.sign_s * conv.log_s.detach().exp())
    torch.testing.assert_close(weight(conv), conv.perm @ lower @ upper)
    x = torch.randn(2, 5, 3, 4)
    y, logdet = conv(x)
    y_ref, logdet_ref = reference_output(conv, x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(logdet, (12 * conv.log_s.sum()).expand(2))
    torch.testing.assert_close(logdet, logdet_ref.expand(2))


def test_lu_masked_entries_do_not_change_the_weight(core_helpers):
    """Entries of ``lower``/``upper`` outside their triangle have no effect on W."""
    conv = InvConv1x1LU(4)
    before = weight(conv)
    with torch.no_grad():
        conv.lower.add_(torch.triu(torch.randn(4, 4)))
        conv.upper.add_(torch.tril(torch.randn(4, 4)))
    torch.testing.assert_close(weight(conv), before, rtol=0, atol=0)


@conv_classes
def test_eval_cache_is_reused_while_weights_are_unchanged(conv_cls):
    """In eval mode without grad, repeated calls reuse the cached (W, W^-1, logdet)."""
    conv = conv_cls(4).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        conv(x)
        cache = conv._cache
        conv.inverse(x)
        conv(x)
    assert cache is not None and conv._cache is cache


def _train_step(conv, x):
    opt = torch.optim.Adam(conv.parameters(), lr=0.1)
    y, logdet = conv(x)
    (-(logdet - 0.5 * (y ** 2).flatten(1).sum(1)).mean() + y[:, 0].sum()).backward()
    opt.step()


def _load_other(conv, x):
    other = type(conv)(conv.num_channels)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    conv.load_state_dict(other.state_dict())


@conv_classes
@pytest.mark.parametrize("change", [_train_step, _load_other], ids=["optimiser_step", "load_state_dict"])
def test_eval_cache_is_invalidated_when_weights_change(conv_cls, change, tol):
    """In eval mode, after an optimiser step or a load_state_dict, forward uses the new W and the
    inverse is still exact (no stale cached W^-1)."""
    conv = conv_cls(4).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        y_old, _ = conv(x)
        conv.inverse(y_old)  # fill the cache
    change(conv, x)
    with torch.no_grad():
        y, logdet = conv(x)
        y_ref, logdet_ref = reference_output(conv, x)
        assert not torch.allclose(y, y_old)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(logdet, logdet_ref.expand(2))
        torch.testing.assert_close(conv.inverse(y)[0], x, rtol=0, atol=tol.round_trip_atol)


@conv_classes
def test_eval_with_grad_matches_cached_eval(conv_cls):
    """Eval mode with autograd (uncached) and without (cached) compute the same map."""
    conv = conv_cls(3).eval()
    x = torch.randn(2, 3, 2, 2)
    y_grad, ld_grad = conv(x)
    with torch.no_grad():
        y_cached, ld_cached = conv(x)
    torch.testing.assert_close(y_grad.detach(), y_cached)
    torch.testing.assert_close(ld_grad.detach(), ld_cached)


@conv_classes
def test_float32_input_keeps_an_exact_inverse(conv_cls):
    """A float32 layer inverts float32 data to float32 precision and returns a float32 logdet."""
    conv = conv_cls(8).float()
    x = torch.randn(4, 8, 3, 3, dtype=torch.float32)
    y, logdet = conv(x)
    assert y.dtype == torch.float32 and logdet.dtype == torch.float32
    torch.testing.assert_close(conv.inverse(y)[0], x, rtol=0, atol=1e-5)


@conv_classes
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 3), (2, 4, 3)])
def test_wrong_input_shape_names_the_shape(conv_cls, shape):
    """A tensor that is not ``[B, C]`` or ``[B, C, H, W]`` with the layer's C raises ValueError naming its shape."""
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        conv_cls(4)(torch.randn(shape))


@conv_classes
def test_zero_channels_rejected(conv_cls):
    """num_channels=0 raises ValueError naming the value."""
    with pytest.raises(ValueError, match="got 0"):
        conv_cls(0)


@conv_classes
def test_vectors_are_a_linear_map(conv_cls, tol):
    """For [B, D] the layer is y = W x with ladj log|det W|, and inverts exactly."""
    conv = conv_cls(5)
    x = torch.randn(4, 5)
    y, logdet = conv(x)
    w = weight(conv)
    torch.testing.assert_close(y, x @ w.T)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(w).logabsdet.expand(4))
    x_back, ladj_inv = conv.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=0, atol=tol.round_trip_atol)
    torch.testing.assert_close(ladj_inv, -logdet)


def _singular(conv):
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]]))
    return conv


def test_singular_weight_eval_forward_does_not_invert():
    """Issue 10 item 14: with a singular W the eval forward still runs (logdet -inf, no inverse
    computed) and the inverse raises InversionError naming the layer and what to do."""
    from glowlab.core import InversionError

    conv = _singular(InvConv1x1(3)).eval()
    x = torch.randn(2, 3, 2, 2)
    with torch.no_grad():
        y, logdet = conv(x)
        assert torch.isfinite(y).all() and conv._cache["w_inv"] is None
        assert torch.isinf(logdet).all() and (logdet < 0).all()
        with pytest.raises(InversionError, match=r"InvConv1x1\(3\).*singular.*InvConv1x1LU"):
            conv.inverse(y)
    with pytest.raises(InversionError, match="singular"):
        conv.train().inverse(y)  # uncached path too


def test_singular_weight_sampling_raises_inversion_error():
    """Sampling a model through a singular 1x1 conv raises InversionError, not a raw LinAlgError."""
    from glowlab.core import Compose, FlowDensity, InversionError, StandardNormal

    density = FlowDensity(StandardNormal((3, 2, 2)), Compose([_singular(InvConv1x1(3))])).eval()
    with pytest.raises(InversionError, match="InvConv1x1"):
        density.sample(2)
    assert torch.isinf(density.log_prob(torch.randn(2, 3, 2, 2))).all()
