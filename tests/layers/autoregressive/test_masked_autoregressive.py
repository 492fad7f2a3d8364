"""MAF and IAF layers: triangular Jacobians, exact ladj both ways, exact sequential inverses, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glowlab.layers.autoregressive import (
    AffineTransformer,
    InverseAutoregressive,
    MaskedAutoregressive,
)

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

# (event shape, layer arguments): vectors and images, affine and spline, both orders
CASES = {
    "vector-affine": ((5,), {"hidden_features": 8, "order": "random", "seed": 4, "context_features": 2}),
    "vector-spline": ((4,), {"hidden_features": [6, 7], "transformer": "spline", "bins": 4, "order": "reversed"}),
    "image-affine": ((2, 3, 3), {"hidden_features": 4, "hidden_layers": 2, "context_features": 2}),
    "image-spline": ((1, 3, 4), {"hidden_features": 3, "transformer": "spline", "bins": 3, "order": "reversed"}),
    # taller than the receptive field (2 rows above): the inverse runs on cropped rows
    "image-tall": ((2, 6, 2), {"hidden_features": 4, "hidden_layers": 2, "order": "reversed", "context_features": 2}),
}


def build(case: str, core_helpers, iaf: bool = False):
    shape, kwargs = CASES[case]
    layer = (InverseAutoregressive if iaf else MaskedAutoregressive)(shape, **kwargs)
    core_helpers.perturb_parameters(layer, scale=0.5)
    ctx = torch.randn(3, 2) if kwargs.get("context_features") else None
    return layer, torch.randn(3, *shape), ctx


def per_sample_jacobian(fn, x):
    jac = torch.autograd.functional.jacobian(lambda t: fn(t).sum(0), x)  # [event..., B, event...]
    d = x[0].numel()
    return jac.movedim(-x.dim(), 0).reshape(x.shape[0], d, d)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_jacobian_is_triangular_in_the_order_and_ladj_is_its_logdet(case, direction, core_helpers, tol):
    layer, x, ctx = build(case, core_helpers)
    fn = (lambda t: layer(t, ctx)[0]) if direction == "forward" else (lambda t: layer.inverse(t, ctx)[0])
    jac = per_sample_jacobian(fn, x)
    perm = torch.argsort(layer.order().flatten())
    jac_ordered = jac[:, perm][:, :, perm]
    assert jac_ordered.triu(1).abs().max() == 0, "an element depends on a later one"
    assert jac_ordered.tril(-1).abs().max() > 1e-3, "the layer is elementwise: nothing to check"
    ladj = layer(x, ctx)[1] if direction == "forward" else layer.inverse(x, ctx)[1]
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jac).logabsdet, rtol=tol.logdet_rtol, atol=tol.logdet_atol)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("iaf", [False, True], ids=["maf", "iaf"])
def test_round_trip_is_exact_and_ladj_flips_sign(case, iaf, core_helpers, tol):
    layer, x, ctx = build(case, core_helpers, iaf)
    y, ladj = layer(x, ctx)
    x2, ladj_inv = layer.inverse(y, ctx)
    torch.testing.assert_close(x2, x, rtol=0, atol=tol.round_trip_atol)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=0, atol=tol.round_trip_atol)
    z = torch.randn_like(x)  # and the other way round
    torch.testing.assert_close(layer(layer.inverse(z, ctx)[0], ctx)[0], z, rtol=0, atol=tol.round_trip_atol)
    assert ladj.shape == (3,) and ladj.dtype == torch.get_default_dtype()


def count_passes(layer: MaskedAutoregressive) -> list[int]:
    calls = [0]
    first = layer.net.convs[0] if layer.event_dim == 3 else layer.net  # runs once per pass
    first.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("case", ["vector-affine", "image-spline"])
def test_maf_density_is_one_pass_and_iaf_sampling_is_one_pass(case, core_helpers):
    maf, x, ctx = build(case, core_helpers)
    iaf, _, _ = build(case, core_helpers, iaf=True)
    maf_calls, iaf_calls = count_passes(maf), count_passes(iaf.bijection)
    maf(x, ctx)
    iaf.inverse(x, ctx)
    assert maf_calls[0] == 1 and iaf_calls[0] == 1
    maf.inverse(x, ctx)
    iaf(x, ctx)
    assert maf_calls[0] == 1 + x[0].numel() == iaf_calls[0]  # D passes, pixel by pixel for images
    assert maf.inverse_kind == "sequential" and not maf.inverse_is_cheap
    assert iaf.inverse_is_cheap  # its inverse (sampling) is the MAF's one-pass forward


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_reach_every_parameter_both_ways(case, core_helpers):
    layer, x, ctx = build(case, core_helpers)
    for direction in (layer.forward, layer.inverse):
        layer.zero_grad()
        y, ladj = direction(x, ctx)
        (y.square().sum() - ladj.sum()).backward()
        core_helpers.assert_every_parameter_has_gradient(layer)


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trip_gives_identical_outputs(case, core_helpers):
    layer, x, ctx = build(case, core_helpers)
    shape, kwargs = CASES[case]
    other = MaskedAutoregressive(shape, **{**kwargs, "seed": 99} if "seed" in kwargs else kwargs)
    other.load_state_dict(layer.state_dict())
    core_helpers.assert_same_state(layer, other)
    for a, b in ((layer(x, ctx), other(x, ctx)), (layer.inverse(x, ctx), other.inverse(x, ctx))):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_zero_initialised_layer_is_the_identity():
    layer = MaskedAutoregressive((2, 3, 3), hidden_features=4, transformer="spline")
    x = torch.randn(2, 2, 3, 3)
    y, ladj = layer(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ladj, torch.zeros(2))


def test_affine_scale_expands_and_contracts_within_its_bound():
    t = AffineTransformer(max_log_scale=2.0)
    raw = torch.tensor([-10.0, -1.0, 0.0, 1.0, 10.0])
    params = torch.stack([torch.zeros(5), raw])[None]  # [1, 2, 5]
    _, log_scale = t(torch.ones(1, 5), params)
    assert log_scale[0, 0] > -2.0 and log_scale[0, -1] < 2.0  # bounded both ways
    assert log_scale[0, 0] < -1.9 and log_scale[0, -1] > 1.9  # and both ways reachable
    assert log_scale[0, 2] == 0 and log_scale[0, 3] > 0 > log_scale[0, 1]


def test_bad_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="event_shape"):
        MaskedAutoregressive((2, 3))
    with pytest.raises(ValueError, match="transformer must be one of"):
        MaskedAutoregressive((3,), transformer="cubic")
    with pytest.raises(ValueError, match="raster"):
        MaskedAutoregressive((1, 2, 2), order="random")
    with pytest.raises(ValueError, match="max_log_scale"):
        MaskedAutoregressive((3,), max_log_scale=0.0)
    layer = MaskedAutoregressive((3,), hidden_features=4)
    with pytest.raises(ValueError, match=r"events of shape \(3,\)"):
        layer(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"events of shape \(3,\)"):
        layer.inverse(torch.randn(2, 3, 1))


def test_reversible_memory_saving_refuses_the_sequential_layer_but_not_iaf(core_helpers):
    from glowlab.execution.memory_saving import MemorySavingSequence

    with pytest.raises(ValueError, match="MaskedAutoregressive"):
        MemorySavingSequence([MaskedAutoregressive((3,), hidden_features=4)], "reversible")
    # an IAF layer's inverse is one pass: reversible backprop accepts it and gives the same gradients
    layers = [InverseAutoregressive((3,), hidden_features=4, order=o) for o in ("identity", "reversed")]
    core_helpers.perturb_parameters(nn.ModuleList(layers), scale=0.5)
    x = torch.randn(5, 3, requires_grad=True)
    grads = []
    for mode in ("none", "reversible"):
        seq = MemorySavingSequence(layers, mode)
        y, ladj = seq(x)
        grads.append(torch.autograd.grad(y.square().sum() - ladj.sum(), [x, *seq.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("order", ["identity", "reversed"])
def test_row_params_equal_the_full_network_on_every_row(order, core_helpers):
    layer = MaskedAutoregressive((2, 7, 3), hidden_features=4, hidden_layers=3, order=order, context_features=2)
    core_helpers.perturb_parameters(layer, scale=0.5)
    assert layer.net.receptive_rows == 3
    x, ctx = torch.randn(2, 2, 7, 3), torch.randn(2, 2)
    full = layer.net(x, ctx)
    for row in range(7):
        torch.testing.assert_close(layer.net.row_params(x, row, ctx), full[:, :, :, row], rtol=1e-12, atol=1e-12)
