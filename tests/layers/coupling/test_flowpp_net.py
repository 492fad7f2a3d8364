"""Flow++'s coupling network (glowlab.layers.coupling.flowpp_net) and the couplings using net="flowpp"."""

from __future__ import annotations

import io

import pytest
import torch

from glowlab.layers.coupling import AffineCoupling, MixtureCoupling, SplineCoupling
from glowlab.layers.coupling.flowpp_net import FlowppCouplingNet, position_encoding
from glowlab.models import Glow

pytestmark = pytest.mark.usefixtures("default_dtype", "seeded", "single_thread")

# (class, extra kwargs, input shape): every coupling family, both masks, with and without attention
LAYOUTS = {
    "affine-channel": (AffineCoupling, {}, (2, 4, 3, 3)),
    "affine-checker-noattn": (AffineCoupling, {"mask": "checkerboard", "parity": 1}, (2, 2, 3, 3)),
    "spline-channel": (SplineCoupling, {"bins": 4}, (2, 4, 3, 3)),
    "mixture-checker": (MixtureCoupling, {"mask": "checkerboard", "components": 3}, (2, 2, 3, 3)),
}


def _layer(name, core_helpers, scale=0.1):
    """A coupling with a 1-block Flow++ network, its parameters perturbed off the (identity) init."""
    cls, kwargs, shape = LAYOUTS[name]
    layer = cls(shape[1], hidden_channels=8, net="flowpp", num_blocks=1, **kwargs)
    if name.endswith("noattn"):
        layer.net = FlowppCouplingNet(layer.net.input.in_channels, layer.net.output.conv.out_channels, 8, 1,
                                      attention=False)
    core_helpers.perturb_parameters(layer, scale=scale)
    return layer, torch.randn(shape)


def test_fresh_network_outputs_zeros_of_the_right_shape():
    for attention in (True, False):
        net = FlowppCouplingNet(3, 10, hidden_channels=8, num_blocks=2, heads=2, attention=attention)
        out = net(torch.randn(2, 3, 5, 4))
        assert out.shape == (2, 10, 5, 4) and torch.equal(out, torch.zeros_like(out))


def test_blocks_and_parameters():
    with_attn = FlowppCouplingNet(3, 4, hidden_channels=8, num_blocks=3)
    without = FlowppCouplingNet(3, 4, hidden_channels=8, num_blocks=3, attention=False)
    assert len(with_attn.blocks) == 6 and len(without.blocks) == 3
    assert sum(p.numel() for p in with_attn.parameters()) > sum(p.numel() for p in without.parameters())


def test_position_encoding_tells_pixels_apart():
    pos = position_encoding(3, 5, 7)
    assert pos.shape == (15, 7) and torch.isfinite(pos).all()
    assert torch.cdist(pos, pos).add(torch.eye(15)).min() > 0  # no two pixels share features


def test_attention_mixes_distant_pixels(core_helpers):
    """With attention a pixel's output depends on a pixel far outside the convolutions' receptive field."""
    for attention, expect in ((True, True), (False, False)):
        net = FlowppCouplingNet(1, 1, hidden_channels=8, num_blocks=1, heads=2, attention=attention)
        core_helpers.perturb_parameters(net, scale=0.3)
        x = torch.randn(1, 1, 12, 12)
        x2 = x.clone()
        x2[0, 0, 11, 11] += 1.0
        assert (net(x)[0, :, 0, 0] != net(x2)[0, :, 0, 0]).any() == expect


# The Jacobian, round-trip and inverse-ladj checks of couplings using this network are cases of
# the contract table (tests/layers/test_flow_contract.py: *_flowpp*).


@pytest.mark.parametrize("name", ["affine-channel", "affine-checker-noattn", "mixture-checker"])
def test_gradients_reach_every_parameter(name, core_helpers):
    layer, x = _layer(name, core_helpers)
    y, ladj = layer(x)
    (y.square().sum() - ladj.sum()).backward()
    core_helpers.assert_every_parameter_has_gradient(layer)


def test_state_dict_round_trip(core_helpers):
    layer, x = _layer("spline-channel", core_helpers)
    other = SplineCoupling(4, hidden_channels=8, net="flowpp", num_blocks=1, bins=4)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    for a, b in zip(layer(x), other(x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("coupling", ["affine", "spline", "mixture"])
def test_glow_with_flowpp_couplings(coupling, core_helpers):
    """``coupling_kwargs`` reaches the coupling: every coupling gets a 1-block Flow++ network."""
    m = Glow(image_shape=(1, 4, 4), levels=1, depth=1, hidden_channels=8, coupling=coupling,
             coupling_kwargs={"net": "flowpp", "num_blocks": 1})
    nets = [mod for mod in m.modules() if isinstance(mod, FlowppCouplingNet)]
    assert len(nets) == 1 and len(nets[0].blocks) == 2
    x = torch.rand(2, 1, 4, 4) - 0.5
    m.log_prob(x)  # ActNorm's data-dependent initialisation
    core_helpers.perturb_parameters(m, scale=0.05)
    lp = m.log_prob(x)
    assert lp.shape == (2,) and torch.isfinite(lp).all()
    zs, _ = m(x)
    assert (m.inverse(zs) - x).abs().max() < 1e-8


def test_memory_saving_gives_the_same_gradients(core_helpers):
    """Reversible backprop rebuilds each step's input by its inverse: the Flow++ network (no dropout)
    is deterministic, so the gradients are those of plain autograd."""
    grads = []
    for memory_saving in ("none", "reversible"):
        torch.manual_seed(0)
        m = Glow(image_shape=(1, 4, 4), levels=1, depth=2, hidden_channels=8, memory_saving=memory_saving,
                 coupling_kwargs={"net": "flowpp", "num_blocks": 1})
        x = torch.rand(3, 1, 4, 4) - 0.5
        m.log_prob(x)
        core_helpers.perturb_parameters(m, scale=0.05)
        (-m.log_prob(x).mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)


def test_bf16_autocast_on_cpu(core_helpers):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net = FlowppCouplingNet(2, 4, hidden_channels=8, num_blocks=1, heads=2).float()
        core_helpers.perturb_parameters(net)
        out = net(torch.randn(2, 2, 4, 4, dtype=torch.float32))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    layer = AffineCoupling(4, 8, net="flowpp", num_blocks=1).float()
    core_helpers.perturb_parameters(layer)
    x = torch.randn(2, 4, 4, 4, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, ladj = layer(x)
    assert y.dtype == torch.float32 and ladj.dtype == torch.float32 and torch.isfinite(ladj).all()


def test_dropout_only_in_training():
    net = FlowppCouplingNet(2, 4, hidden_channels=8, num_blocks=1, heads=2, dropout=0.5)
    with torch.no_grad():
        net.output.conv.weight.normal_()
    x = torch.randn(2, 2, 4, 4)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden_channels": 10, "heads": 4}, r"hidden_channels=10 is not divisible by heads=4"),
    ({"num_blocks": -1}, "num_blocks"),
    ({"heads": 0}, "heads"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlowppCouplingNet(2, 4, **{"hidden_channels": 8, **kwargs})


def test_bad_heads_through_a_coupling_and_without_attention():
    with pytest.raises(ValueError, match="multiple of heads"):
        AffineCoupling(4, 6, net="flowpp")  # 6 hidden channels, 4 heads
    FlowppCouplingNet(2, 4, hidden_channels=6, attention=False)  # no heads needed
