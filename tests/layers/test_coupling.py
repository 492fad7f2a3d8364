"""Coupling layers: which entries are kept, the scale formulas, conditioning and argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.flows import AdditiveCoupling, AffineCoupling, MLPAdditiveCoupling, checkerboard_mask

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")


def kept_entries(mask: str, parity: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Boolean ``[C, H, W]``: the entries a coupling leaves unchanged, from the documented rule."""
    if mask == "checkerboard":
        i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        return ((i + j) % 2 == parity).expand(channels, height, width)
    keep = torch.zeros(channels, dtype=torch.bool)
    if parity == 0:
        keep[: channels // 2] = True
    else:
        keep[channels // 2:] = True
    return keep[:, None, None].expand(channels, height, width)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("coupling_cls", [AffineCoupling, AdditiveCoupling])
def test_kept_entries_pass_through_and_the_others_change(coupling_cls, mask, parity, channels, core_helpers):
    """The kept part (first C//2 channels, last C - C//2 with parity 1, or the (i+j)%2==parity pixels)
    is copied exactly; every other entry changes once the network is non-zero."""
    layer = coupling_cls(channels, 6, mask=mask, parity=parity)
    x = torch.randn(2, channels, 4, 4)
    layer(x)  # ActNorm init inside the network
    core_helpers.perturb_parameters(layer, scale=0.3)
    with torch.no_grad():
        y, _ = layer(x)
    keep = kept_entries(mask, parity, channels, 4, 4).expand_as(x)
    assert torch.equal(y[keep], x[keep])
    assert (y[~keep] != x[~keep]).all()


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_fresh_coupling_formulas(mask):
    """With the zero-initialised last layer (h = 0): sigmoid scale gives y_b = sigmoid(2) x_b and
    logdet = n_b log sigmoid(2); tanh scale and additive couplings are the identity with logdet 0."""
    x = torch.randn(2, 4, 4, 4)
    n_changed = 2 * 16 if mask == "channel" else 4 * 8
    keep = kept_entries(mask, 0, 4, 4, 4).expand_as(x)
    y, logdet = AffineCoupling(4, 6, mask=mask)(x)
    s = 1 / (1 + math.exp(-2.0))
    torch.testing.assert_close(y[~keep], s * x[~keep])
    torch.testing.assert_close(logdet, torch.full((2,), n_changed * math.log(s)))
    for layer in (AffineCoupling(4, 6, mask=mask, scale_fn="tanh"), AdditiveCoupling(4, 6, mask=mask)):
        y, logdet = layer(x)
        assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))


def test_sigmoid_scale_is_at_most_one(core_helpers):
    """Glow's scale s = sigmoid(h + 2) lies in (0, 1): the coupling never expands, so logdet < 0."""
    layer = AffineCoupling(4, 6)
    layer(torch.randn(4, 4, 4, 4))
    core_helpers.perturb_parameters(layer, scale=1.0)
    _, logdet = layer(10 * torch.randn(4, 4, 4, 4))
    assert (logdet < 0).all()


def test_tanh_scale_is_bounded_by_the_learned_scale(core_helpers):
    """RealNVP's log s = scale * tanh(h): |logdet| <= n_b * max|scale|."""
    layer = AffineCoupling(4, 6, scale_fn="tanh")
    layer(torch.randn(4, 4, 4, 4))
    core_helpers.perturb_parameters(layer, scale=1.0)
    _, logdet = layer(10 * torch.randn(4, 4, 4, 4))
    bound = 2 * 16 * layer.tanh_scale.abs().max()
    assert (logdet.abs() <= bound).all() and logdet.abs().max() > 0


@pytest.mark.parametrize("cond_shape", [(2, 3), (2, 3, 4, 4), (2, 3, 8, 8), (2, 3, 2, 2)],
                         ids=["vector", "map", "larger_map", "smaller_map"])
def test_conditioning_changes_the_map(cond_shape, core_helpers, tol):
    """A conditional coupling depends on cond (vector or map of any size), and inverts given the same cond."""
    layer = AffineCoupling(4, 6, cond_channels=3)
    x = torch.randn(2, 4, 4, 4)
    cond = torch.randn(cond_shape)
    layer(x, cond)
    core_helpers.perturb_parameters(layer, scale=0.1)
    with torch.no_grad():
        y, logdet = layer(x, cond)
        y_other, logdet_other = layer(x, cond + 1)
        assert not torch.allclose(y, y_other) and not torch.allclose(logdet, logdet_other)
        torch.testing.assert_close(layer.inverse(y, cond)[0], x, rtol=0, atol=tol.round_trip_atol)


def test_vector_cond_equals_constant_map_cond(core_helpers):
    """A vector cond ``[B, K]`` acts like the constant map ``[B, K, H, W]`` it is tiled into."""
    layer = AffineCoupling(4, 6, cond_channels=3)
    x, cond = torch.randn(2, 4, 4, 4), torch.randn(2, 3)
    layer(x, cond)
    core_helpers.perturb_parameters(layer, scale=0.3)
    y_vec, ld_vec = layer(x, cond)
    y_map, ld_map = layer(x, cond[:, :, None, None].expand(-1, -1, 4, 4))
    torch.testing.assert_close(y_vec, y_map)
    torch.testing.assert_close(ld_vec, ld_map)


@pytest.mark.parametrize(("cond", "match"), [
    (None, "cond_channels=3"),
    (torch.zeros(2, 5), r"3 channels.*\(2, 5\)"),
    (torch.zeros(2, 3, 4), r"\(2, 3, 4\)"),
])
def test_bad_cond_is_rejected(cond, match):
    """A missing cond, or one with the wrong channels or rank, raises ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        AffineCoupling(4, 6, cond_channels=3)(torch.randn(2, 4, 4, 4), cond)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(in_channels=1, mask="channel"), "in_channels=1"),
    (dict(in_channels=4, mask="stripes"), "'stripes'"),
    (dict(in_channels=4, scale_fn="exp"), "'exp'"),
    (dict(in_channels=4, net="unet"), "'unet'"),
    (dict(in_channels=4, parity=2), "got 2"),
])
@pytest.mark.parametrize("coupling_cls", [AffineCoupling, AdditiveCoupling])
def test_bad_construction_names_the_value(coupling_cls, kwargs, match):
    """Invalid coupling arguments raise ValueError with a message naming the offending value."""
    with pytest.raises(ValueError, match=match):
        coupling_cls(hidden_channels=4, **kwargs)


def test_single_channel_checkerboard_coupling_works(tol):
    """A 1-channel image can use checkerboard couplings (the channel mask cannot split it)."""
    layer = AffineCoupling(1, 4, mask="checkerboard", parity=1)
    x = torch.randn(2, 1, 4, 4)
    y, _ = layer(x)
    torch.testing.assert_close(layer.inverse(y)[0], x, rtol=0, atol=tol.round_trip_atol)


def test_wrong_input_channels_rejected():
    """A coupling called on input with other channels raises ValueError naming the shape."""
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\)"):
        AffineCoupling(4, 6)(torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("parity", [0, 1])
def test_checkerboard_mask_values(parity):
    """checkerboard_mask is 1 exactly where (i + j) % 2 == parity, shape [1, 1, H, W]."""
    mask = checkerboard_mask(3, 4, parity)
    assert mask.shape == (1, 1, 3, 4)
    assert torch.equal(mask[0, 0].bool(), kept_entries("checkerboard", parity, 1, 3, 4)[0])


@pytest.mark.parametrize("parity", [0, 1])
def test_mlp_coupling_changes_only_entries_of_the_other_parity(parity, core_helpers):
    """NICE's coupling copies the flattened entries with index % 2 == parity and shifts the others."""
    layer = MLPAdditiveCoupling(12, 8, 2, parity=parity)
    core_helpers.perturb_parameters(layer, scale=0.3)
    x = torch.randn(2, 3, 2, 2)
    y, logdet = layer(x)
    kept = torch.arange(12) % 2 == parity
    assert torch.equal(y.flatten(1)[:, kept], x.flatten(1)[:, kept])
    assert (y.flatten(1)[:, ~kept] != x.flatten(1)[:, ~kept]).all()
    assert torch.equal(logdet, torch.zeros(2))


def test_mlp_coupling_rejects_bad_sizes():
    """NICE coupling: fewer than 2 features, or input of another size, raise ValueError naming the size."""
    with pytest.raises(ValueError, match="got 1"):
        MLPAdditiveCoupling(1)
    with pytest.raises(ValueError, match=r"12 features.*\(2, 1, 2, 2\)"):
        MLPAdditiveCoupling(12, 4, 1)(torch.randn(2, 1, 2, 2))
