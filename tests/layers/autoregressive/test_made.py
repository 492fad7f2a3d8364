"""MADE and masked convolutions: the masks give exactly the autoregressive dependencies of the order."""

from __future__ import annotations

import pytest
import torch

from glowlab.layers.autoregressive import (
    MADE,
    MaskedConvNet,
    autoregressive_order,
    raster_order,
)

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


def jacobian(fn, x):
    """``[B, out..., in...]`` per-sample Jacobian of a batched map (samples are independent)."""
    jac = torch.autograd.functional.jacobian(lambda t: fn(t).sum(0), x)  # [out..., B, in...]
    return jac.movedim(-x.dim(), 0)


@pytest.mark.parametrize("order", ["identity", "reversed", "random"])
@pytest.mark.parametrize("hidden", [[5, 7], [], [40]])
def test_made_connects_each_output_to_exactly_the_inputs_before_it(order, hidden):
    d = 6
    made = MADE(d, hidden, params_per_feature=2, order=order, seed=3)
    rank = made.order
    expected = rank[:, None] > rank[None, :]
    assert torch.equal(made.connectivity(), expected)


@pytest.mark.parametrize("order", ["identity", "reversed", "random"])
def test_made_jacobian_is_strictly_triangular_in_its_order(order, core_helpers):
    d = 5
    # tanh: a ReLU unit can be inactive on every sample of a small batch, which would hide a connection
    made = MADE(d, [8, 8], params_per_feature=3, order=order, seed=11, context_features=2, activation="tanh")
    core_helpers.perturb_parameters(made, scale=0.5)
    x, ctx = torch.randn(4, d), torch.randn(4, 2)
    jac = jacobian(lambda t: made(t, ctx), x)  # [B, P, D, D]
    perm = torch.argsort(made.order)  # features listed in their order
    jac = jac[:, :, perm][:, :, :, perm].abs().amax((0, 1))
    assert (jac.triu() == 0).all(), "an output depends on itself or on a later input"
    assert (jac.tril(-1) > 0).sum() == d * (d - 1) // 2, "an output is cut off from an earlier input"
    # the context reaches every output, including the first one in the order
    jac_ctx = jacobian(lambda c: made(x, c), ctx).abs().amax((0, 1, 3))  # [D]
    assert (jac_ctx > 0).all()


def test_made_rejects_too_narrow_hidden_layers_and_bad_orders():
    with pytest.raises(ValueError, match="at least one unit"):
        MADE(10, [4, 0])
    with pytest.raises(ValueError, match="order must be one of"):
        MADE(3, [4], order="sideways")
    with pytest.raises(ValueError, match="permutation"):
        MADE(3, [4], order=torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="context of shape"):
        MADE(3, [4], context_features=2)(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"expects \[B, 3\]"):
        MADE(3, [4])(torch.randn(2, 4))


def test_random_order_seed_is_saved_and_restored(core_helpers):
    a = MADE(7, [10], order="random")  # the seed is drawn, then kept in the state dict
    assert int(a.seed) >= 0
    assert torch.equal(a.order, autoregressive_order(7, "random", int(a.seed)))
    core_helpers.perturb_parameters(a, scale=0.5)
    b = MADE(7, [10], order="random", seed=int(a.seed) + 1)
    assert not torch.equal(a.order, b.order)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.order, a.order) and int(b.seed) == int(a.seed)
    assert torch.equal(b.connectivity(), a.connectivity())
    x = torch.randn(3, 7)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("channels", [1, 3])
def test_masked_conv_net_is_autoregressive_in_raster_then_channel_order(channels, reverse, core_helpers):
    net = MaskedConvNet(channels, hidden_channels=6, hidden_layers=3, params_per_channel=2, kernel_size=3,
                        reverse=reverse, context_features=2, activation="tanh")
    core_helpers.perturb_parameters(net, scale=0.5)
    x, ctx = torch.randn(2, channels, 4, 4), torch.randn(2, 2)
    d = x[0].numel()
    jac = jacobian(lambda t: net(t, ctx), x)  # [B, P, C, H, W, C, H, W]
    jac = jac.abs().amax((0, 1)).reshape(d, d)
    perm = torch.argsort(raster_order(x.shape[1:], reverse).flatten())
    jac = jac[perm][:, perm]
    assert (jac.triu() == 0).all(), "an output depends on itself or on a later element"
    # the same-pixel earlier channels and the left and upper neighbours are seen
    rank = raster_order(x.shape[1:], reverse)
    pairs = [((c, 1, 1), (c - 1, 1, 1)) for c in range(1, channels)]  # channels of one pixel
    pairs += [((0, 1, 1), (0, 1, 0)), ((0, 2, 1), (0, 1, 1)), ((0, 2, 1), (channels - 1, 1, 2))]  # neighbours
    for a, b in pairs:
        later, earlier = max(rank[a], rank[b]), min(rank[a], rank[b])
        assert jac[later, earlier] > 0, f"{a} and {b} are not connected"


def test_masked_conv_net_checks_its_arguments():
    with pytest.raises(ValueError, match="hidden_channels >= 3"):
        MaskedConvNet(3, hidden_channels=2)
    with pytest.raises(ValueError, match="odd"):
        MaskedConvNet(1, hidden_channels=4, kernel_size=2)
    with pytest.raises(ValueError, match=r"expects \[B, 1, H, W\]"):
        MaskedConvNet(1, hidden_channels=4)(torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("context_features", [0, 2])
def test_narrow_made_drops_connections_but_cuts_no_output_off(context_features):
    made = MADE(20, [6, 5], params_per_feature=2, order="random", seed=1, context_features=context_features)
    rank = made.order
    conn = made.connectivity()
    assert not (conn & ~(rank[:, None] > rank[None, :])).any(), "an output sees a later input"
    assert conn[rank > 0].any(1).all(), "an output other than the first is cut off from every input"
    assert conn.sum() < 20 * 19 // 2  # 5 hidden units cannot carry 19 degrees


def test_cached_masked_weight_follows_in_place_updates_and_loads():
    made = MADE(4, [6], params_per_feature=2)
    x = torch.randn(3, 4)
    with torch.no_grad():
        before = made(x)
        for p in made.parameters():
            p.add_(0.3)  # an optimiser step: in place
        after = made(x)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, made(x))  # with a graph: no cache, same numbers
    other = MADE(4, [6], params_per_feature=2)
    with torch.no_grad():
        other(x)  # fills other's cache
        other.load_state_dict(made.state_dict())
        assert torch.equal(other(x), after)
    assert "_masked" not in str(list(made.state_dict()))
