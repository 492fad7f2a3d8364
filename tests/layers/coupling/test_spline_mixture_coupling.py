"""Spline and logistic-mixture couplings (glowlab.layers.coupling.spline / .mixture)."""

from __future__ import annotations

import io

import pytest
import torch

from glowlab.core import ContextError
from glowlab.layers.coupling.mixture import MixtureCoupling
from glowlab.layers.coupling.spline import SplineCoupling

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

# (class, extra kwargs, input shape)
LAYOUTS = {
    "spline-channel-glow": (SplineCoupling, {"bins": 5}, (2, 4, 3, 3)),
    "spline-checker-resnet": (SplineCoupling, {"mask": "checkerboard", "net": "resnet", "parity": 1}, (2, 3, 3, 3)),
    "spline-vector": (SplineCoupling, {"event_dim": 1, "parity": 1}, (3, 5)),
    "mixture-channel-glow": (MixtureCoupling, {"components": 3}, (2, 4, 3, 3)),
    "mixture-checker-glow": (MixtureCoupling, {"mask": "checkerboard"}, (2, 2, 3, 3)),
    "mixture-vector": (MixtureCoupling, {"event_dim": 1, "components": 4}, (3, 6)),
}


def _layer(name, core_helpers, scale=0.1, **extra):
    """A layer with ActNorm initialised and parameters perturbed off the identity; scale 0.1 already
    gives log-derivatives down to about -30 (larger ones make maps so flat in places that no
    float64 inverse can recover x: a property of these maps, not of their inverses)."""
    cls, kwargs, shape = LAYOUTS[name]
    layer = cls(shape[1], hidden_channels=8, **kwargs, **extra)
    x = torch.randn(shape) * 2
    layer(x, extra.get("cond_channels") and torch.randn(shape[0], extra["cond_channels"]))  # ActNorm init
    core_helpers.perturb_parameters(layer, scale=scale)
    return layer, x


@pytest.mark.parametrize("name", LAYOUTS)
def test_ladj_matches_the_jacobian(name, core_helpers, tol):
    layer, x = _layer(name, core_helpers)
    y, ladj = layer(x)
    assert not torch.allclose(y, x), "the perturbed layer should not be the identity"
    logabsdet, cross = core_helpers.jacobian_logdet(lambda t: layer(t)[0], x)
    torch.testing.assert_close(ladj, logabsdet, rtol=tol.logdet_rtol, atol=tol.logdet_atol)
    assert cross == 0


@pytest.mark.parametrize("name", LAYOUTS)
def test_round_trip_and_inverse_ladj(name, core_helpers):
    layer, x = _layer(name, core_helpers)
    y, ladj = layer(x)
    x2, ladj_inv = layer.inverse(y)
    assert (x2 - x).abs().max() <= 1e-9
    torch.testing.assert_close(ladj_inv, -ladj, rtol=1e-9, atol=1e-9)
    jac_inv, _ = core_helpers.jacobian_logdet(lambda t: layer.inverse(t)[0], y)
    torch.testing.assert_close(ladj_inv, jac_inv, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", LAYOUTS)
def test_fresh_layer_is_the_identity(name):
    cls, kwargs, shape = LAYOUTS[name]
    x = torch.randn(shape)
    y, ladj = cls(shape[1], hidden_channels=8, **kwargs)(x)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(ladj, torch.zeros(shape[0]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["spline-channel-glow", "mixture-checker-glow"])
def test_kept_entries_pass_through(name, core_helpers):
    layer, x = _layer(name, core_helpers)
    y, _ = layer(x)
    if layer.mask == "channel":
        keep = torch.zeros_like(x, dtype=torch.bool)
        keep[:, : layer.n_kept] = True
    else:
        i, j = torch.meshgrid(torch.arange(x.shape[2]), torch.arange(x.shape[3]), indexing="ij")
        keep = ((i + j) % 2 == layer.parity).expand_as(x)
    inside = x.abs() < 3.0  # the spline's tails are the identity
    assert torch.equal(y[keep], x[keep]) and (y[~keep & inside] != x[~keep & inside]).all()


@pytest.mark.parametrize("name", ["spline-channel-glow", "mixture-vector"])
def test_gradients_reach_every_parameter(name, core_helpers):
    layer, x = _layer(name, core_helpers)
    y, ladj = layer(x)
    (y.square().sum() - ladj.sum()).backward()
    core_helpers.assert_every_parameter_has_gradient(layer)


@pytest.mark.parametrize("name", ["spline-checker-resnet", "mixture-channel-glow"])
def test_state_dict_round_trip(name, core_helpers):
    layer, x = _layer(name, core_helpers)
    cls, kwargs, shape = LAYOUTS[name]
    other = cls(shape[1], hidden_channels=8, **kwargs)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    for a, b in zip(layer(x), other(x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["spline-channel-glow", "mixture-vector"])
def test_conditioning(name, core_helpers):
    layer, x = _layer(name, core_helpers, cond_channels=2)
    c1, c2 = torch.randn(x.shape[0], 2), torch.randn(x.shape[0], 2)
    y1, l1 = layer(x, c1)
    assert not torch.allclose(y1, layer(x, c2)[0])
    x2, l2 = layer.inverse(y1, c1)
    assert (x2 - x).abs().max() < 1e-9 and torch.allclose(l1, -l2)
    with pytest.raises(ContextError, match="conditional"):
        layer(x)
    with pytest.raises(ContextError, match="context must be"):
        layer(x, torch.randn(x.shape[0], 3))


def test_inverse_kinds():
    assert SplineCoupling(4, 8).inverse_is_cheap and SplineCoupling(4, 8).inverse_kind == "analytic"
    assert MixtureCoupling(4, 8).inverse_kind == "numerical" and not MixtureCoupling(4, 8).inverse_is_cheap
    assert SplineCoupling(4, 8, event_dim=1).event_dim == 1 and SplineCoupling(4, 8).event_dim == 3


@pytest.mark.parametrize("cls, kwargs, match", [
    (SplineCoupling, {"bins": 0}, "bins"),
    (SplineCoupling, {"bins": 8, "min_width": 0.2}, "min_width"),
    (SplineCoupling, {"event_dim": 2}, "event_dim"),
    (SplineCoupling, {"event_dim": 1, "mask": "checkerboard"}, "mask"),
    (SplineCoupling, {"net": "mlp"}, "net"),
    (MixtureCoupling, {"components": 0}, "components"),
    (MixtureCoupling, {"tol": 0.0}, "tol"),
])
def test_bad_arguments_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(4, 8, **kwargs)


def test_bad_input_shape_is_named():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        SplineCoupling(4, 8)(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="at least 2"):
        MixtureCoupling(1, 8)
