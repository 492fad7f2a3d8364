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


# -- issue 10 item 12: RealNVP's compounding translation, and the bound that stops it -----------------

def _perturbed_realnvp(bound, seed=0, sigma=0.05):
    """RealNVP(image_shape=(1, 8, 8)) after ActNorm init, every parameter moved by N(0, sigma^2), with
    ``translation_bound`` set on every coupling (None: glowlab 0.1's unbounded translation)."""
    from glowlab.models import RealNVP

    torch.manual_seed(seed)
    model = RealNVP(image_shape=(1, 8, 8))
    for m in model.modules():
        if isinstance(m, AffineCoupling):
            m.translation_bound = bound
    x = torch.rand(3, 1, 8, 8) - 0.5
    with torch.no_grad():
        model.log_prob(x)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(sigma * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    return model.eval(), x


def test_unbounded_translation_compounds_over_realnvp_couplings():
    """The cause: the residual networks are positively homogeneous ReLU nets, so an unbounded
    translation grows with their input and the growth compounds from coupling to coupling; at 0.05
    the latents reach ~1e30 and the round trip fails outright."""
    model, x = _perturbed_realnvp(None)
    with torch.no_grad():
        zs, _ = model(x)
        x_back = model.inverse(zs)
    assert max(z.abs().max() for z in zs) > 1e20
    assert (x_back - x).abs().max() > 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_bounded_translation_keeps_perturbed_realnvp_invertible(seed):
    """With translation_bound=5 the same perturbed RealNVP inverts to 1e-8 in float64."""
    model, x = _perturbed_realnvp(5.0, seed)
    with torch.no_grad():
        zs, logdet = model(x)
        x_back = model.inverse(zs)
    assert torch.isfinite(logdet).all() and max(z.abs().max() for z in zs) < 1e5
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-8)


@pytest.mark.slow
def test_bounded_translation_realnvp_logdet_matches_brute_force(core_helpers):
    """The 0.05-perturbed RealNVP's logdet equals slogdet of its autograd Jacobian (64 x 64, ~20 s)."""
    model, x = _perturbed_realnvp(5.0, seed=1)
    with torch.no_grad():
        _, logdet = model(x)
    expected, cross = core_helpers.jacobian_logdet(lambda v: torch.cat([z.flatten(1) for z in model(v)[0]], 1), x)
    torch.testing.assert_close(logdet, expected, rtol=1e-8, atol=1e-8)
    assert cross == 0


def test_translation_bound_soft_clamps_t(core_helpers):
    """|t| <= b (saturating), and the bounded layer equals the unbounded one where |t| << b."""
    layer = AffineCoupling(4, 8, net="resnet", num_blocks=1, scale_fn="tanh", translation_bound=2.0)
    core_helpers.perturb_parameters(layer, scale=1.0)
    kept = 50 * torch.randn(3, 2, 4, 4)
    t, _ = layer._net_params(kept, None, kept.dtype)
    assert t.abs().max() <= 2.0 and t.abs().max() > 1.5  # saturated, not cut off
    layer.translation_bound = 1e9
    t_small, _ = layer._net_params(kept / 1e4, None, kept.dtype)
    layer.translation_bound = None
    t_ref, _ = layer._net_params(kept / 1e4, None, kept.dtype)
    torch.testing.assert_close(t_small, t_ref)
    with pytest.raises(ValueError, match="translation_bound"):
        AffineCoupling(4, 8, translation_bound=0.0)


@pytest.mark.parametrize("coupling_cls", [AffineCoupling, AdditiveCoupling])
@pytest.mark.parametrize("parity", [0, 1])
def test_vector_coupling_keeps_half_and_inverts(coupling_cls, parity, core_helpers, tol):
    """event_dim=1: [B, D] with an MLP conditioner; the kept half passes through."""
    layer = coupling_cls(5, 8, parity=parity, event_dim=1, scale_fn="tanh")
    assert layer.event_dim == 1 and type(layer.net).__name__ == "MLP"
    core_helpers.perturb_parameters(layer, scale=0.3)
    x = torch.randn(4, 5)
    y, ladj = layer(x)
    kept = slice(0, 2) if parity == 0 else slice(2, 5)
    torch.testing.assert_close(y[:, kept], x[:, kept], rtol=0, atol=0)
    x_back, ladj_inv = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=0, atol=tol.round_trip_atol)
    torch.testing.assert_close(ladj_inv, -ladj)
    with pytest.raises(ValueError, match=r"\[B, 5\]"):
        layer(torch.randn(4, 5, 2, 2))
    with pytest.raises(ValueError, match="mask must be one of"):
        coupling_cls(5, 8, mask="checkerboard", event_dim=1)
