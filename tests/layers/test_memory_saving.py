"""memory_saving="none" | "checkpoint" | "reversible": same values, same gradients, less memory."""

from __future__ import annotations

import pytest
import torch

from glowlab.execution.memory_saving import MemorySavingSequence, reversible_forward
from glowlab.flows import ActNorm, AffineCoupling, InvConv1x1LU, Squeeze
from glowlab.models import Glow, RealNVP

MODES = ("none", "checkpoint", "reversible")
# relative error ||g - g_none|| / ||g_none|| allowed per gradient tensor
GRAD_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}

MODELS = {
    "glow-affine": lambda ms: Glow((3, 8, 8), levels=2, depth=3, hidden_channels=16, memory_saving=ms),
    "glow-additive-invconv": lambda ms: Glow((3, 8, 8), levels=2, depth=2, hidden_channels=16,
                                             coupling="additive", permutation="invconv", memory_saving=ms),
    "realnvp": lambda ms: RealNVP((3, 8, 8), levels=2, hidden_channels=8, num_blocks=1, memory_saving=ms),
}


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def any_dtype(request):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    try:
        yield request.param
    finally:
        torch.set_default_dtype(previous)


def _perturb(module, scale=0.02, seed=1234):
    # small enough that the perturbed models stay well conditioned (log p ~ -40 nats), large enough
    # that every zero-initialised layer is far from the identity
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))


def _initialised_model(name):
    torch.manual_seed(0)
    model = MODELS[name]("none")
    x = torch.rand(6, 3, 8, 8) - 0.5
    model.log_prob(x)  # ActNorm data-dependent initialisation
    _perturb(model)
    return model, torch.rand(4, 3, 8, 8) - 0.5


def _log_prob_and_grads(model, x):
    x = x.clone().requires_grad_(True)
    lp = model.log_prob(x)
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad((lp * torch.linspace(0.5, 1.5, len(lp))).sum(), [x, *params])
    return lp.detach(), grads


def _rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny)).item()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_agree_across_modes(name, any_dtype):
    model, x = _initialised_model(name)
    lp_ref, g_ref = _log_prob_and_grads(model, x)
    assert torch.isfinite(lp_ref).all()
    assert all(g.abs().sum() > 0 for g in g_ref), "every parameter and the input should get a gradient"
    for mode in ("checkpoint", "reversible"):
        model.memory_saving = mode
        assert model.memory_saving == mode
        lp, grads = _log_prob_and_grads(model, x)
        torch.testing.assert_close(lp, lp_ref, rtol=GRAD_RTOL[any_dtype], atol=0)
        names = ["x"] + [n for n, _ in model.named_parameters()]
        errs = {n: _rel_err(g, r) for n, g, r in zip(names, grads, g_ref)}
        worst = max(errs, key=errs.get)
        assert errs[worst] < GRAD_RTOL[any_dtype], f"{mode}: gradient of {worst} off by {errs[worst]:.2e}"


def test_constructor_argument_and_validation():
    model = Glow((3, 8, 8), levels=2, depth=2, hidden_channels=8, memory_saving="reversible")
    assert model.memory_saving == "reversible"
    assert model.config["memory_saving"] == "reversible"
    with pytest.raises(ValueError, match="memory_saving"):
        Glow((3, 8, 8), levels=2, depth=2, hidden_channels=8, memory_saving="revnet")
    with pytest.raises(ValueError, match="memory_saving"):
        model.memory_saving = "bogus"


def test_state_dict_is_shared_across_modes():
    torch.manual_seed(0)
    a = Glow((3, 8, 8), levels=2, depth=2, hidden_channels=8, memory_saving="none")
    b = Glow((3, 8, 8), levels=2, depth=2, hidden_channels=8, memory_saving="reversible")
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 3, 8, 8) - 0.5
    a.eval(), b.eval()
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x))


@pytest.mark.parametrize("mode", ["checkpoint", "reversible"])
def test_actnorm_initialisation_matches_plain(mode):
    """The first batch initialises every ActNorm exactly as the plain model does, and its
    training step gets the same loss and gradients."""
    torch.manual_seed(0)
    ref = Glow((3, 8, 8), levels=2, depth=2, hidden_channels=8)
    rev = Glow((3, 8, 8), levels=2, depth=2, hidden_channels=8, memory_saving=mode)
    rev.load_state_dict(ref.state_dict())
    x = torch.rand(5, 3, 8, 8) - 0.5
    lp_ref, lp_rev = ref.log_prob(x), rev.log_prob(x)
    torch.testing.assert_close(lp_rev, lp_ref)
    for (n, p), (_, q) in zip(ref.state_dict().items(), rev.state_dict().items()):
        torch.testing.assert_close(q, p, msg=n)
    assert all(m.is_initialized() for m in rev.modules() if isinstance(m, ActNorm))
    lp_ref.mean().backward()
    lp_rev.mean().backward()
    # right after the data-dependent init some gradients (e.g. of the first ActNorm's loc) are
    # zero up to rounding, so compare the whole gradient vector
    g_ref = torch.cat([p.grad.flatten() for p in ref.parameters()])
    g_rev = torch.cat([p.grad.flatten() for p in rev.parameters()])
    assert _rel_err(g_rev, g_ref) < 1e-5


@pytest.mark.parametrize("mode", ["checkpoint", "reversible"])
def test_eval_and_no_grad_use_plain_path(mode):
    model, x = _initialised_model("glow-affine")
    model.eval()
    with torch.no_grad():
        ref = model.log_prob(x)
        model.memory_saving = mode
        out = model.log_prob(x)
        assert not out.requires_grad
        samples = model.sample(3, temperature=0.7)
    torch.testing.assert_close(out, ref)
    assert samples.shape == (3, 3, 8, 8) and torch.isfinite(samples).all()
    # eval mode with grad enabled (e.g. input gradients of a trained model) still works
    model.memory_saving = "none"
    lp_ref, g_ref = _log_prob_and_grads(model, x)
    model.memory_saving = mode
    lp, grads = _log_prob_and_grads(model, x)
    torch.testing.assert_close(lp, lp_ref)
    assert max(_rel_err(g, r) for g, r in zip(grads, g_ref)) < 1e-5


def test_training_trajectories_match():
    """A few optimiser steps give the same parameters whatever the mode (SGD: Adam's normalised
    step would turn rounding-level differences of near-zero gradients into lr-sized ones)."""
    finals = {}
    for mode in MODES:
        torch.manual_seed(0)
        model = Glow((3, 8, 8), levels=2, depth=2, hidden_channels=8, memory_saving=mode)
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            x = torch.rand(4, 3, 8, 8, generator=gen) - 0.5
            opt.zero_grad()
            loss = -model.log_prob(x).mean()
            loss.backward()
            opt.step()
        finals[mode] = torch.cat([p.detach().flatten() for p in model.parameters()])
    for mode in ("checkpoint", "reversible"):
        torch.testing.assert_close(finals[mode], finals["none"], rtol=1e-4, atol=1e-5)


def test_conditional_flows_and_cond_gradient(any_dtype):
    """reversible_forward passes cond to every flow and returns its gradient."""
    torch.manual_seed(0)
    flows = [ActNorm(4), InvConv1x1LU(4), AffineCoupling(4, 8, cond_channels=3),
             AffineCoupling(4, 8, cond_channels=3, mask="checkerboard", parity=1)]
    seq = MemorySavingSequence(flows, "none")
    x, cond = torch.randn(3, 4, 4, 4), torch.randn(3, 3)
    seq(x, cond)
    _perturb(seq, 0.1)
    results = {}
    for mode in MODES:
        seq.memory_saving = mode
        xx, cc = x.clone().requires_grad_(), cond.clone().requires_grad_()
        y, ld = seq(xx, cc)
        loss = (y.square() * torch.linspace(0, 1, 4).view(1, 4, 1, 1)).sum() - 2 * ld.sum()
        results[mode] = torch.autograd.grad(loss, [xx, cc, *seq.parameters()])
    for mode in ("checkpoint", "reversible"):
        for g, r in zip(results[mode], results["none"]):
            assert _rel_err(g, r) < GRAD_RTOL[any_dtype]


def test_logdet_only_and_output_only_losses():
    """Gradients are right when only one of (y, logdet) enters the loss."""
    torch.manual_seed(0)
    flows = [Squeeze(), ActNorm(8), InvConv1x1LU(8), AffineCoupling(8, 8)]
    seq = MemorySavingSequence(flows, "none").double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    seq(x)
    _perturb(seq, 0.1)
    params = list(seq.parameters())
    for pick in (0, 1):
        ref = torch.autograd.grad(seq(x)[pick].sum(), params, allow_unused=True, materialize_grads=True)
        out = reversible_forward(seq.flows, x)[pick]
        got = torch.autograd.grad(out.sum(), params, allow_unused=True, materialize_grads=True)
        for g, r in zip(got, ref):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def _saved_bytes(model, x) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of ``log_prob``."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = -model.log_prob(x).mean()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    del loss
    return sum(n for ptr, n in storages.items() if ptr not in params)


def test_reversible_activation_memory_does_not_grow_with_depth():
    x = torch.rand(2, 3, 8, 8) - 0.5
    saved = {}
    for mode in MODES:
        for depth in (2, 8):
            torch.manual_seed(0)
            model = Glow((3, 8, 8), levels=2, depth=depth, hidden_channels=32, memory_saving=mode)
            model.log_prob(x)  # initialise ActNorm
            saved[mode, depth] = _saved_bytes(model, x)
    assert saved["none", 8] > 3 * saved["none", 2]
    assert saved["checkpoint", 8] < saved["none", 8] / 3
    assert saved["reversible", 8] == saved["reversible", 2]  # only level outputs and priors
    assert saved["reversible", 8] < saved["none", 8] / 10


def test_reversible_under_bf16_autocast():
    model, x = _initialised_model("glow-affine")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp_ref, g_ref = _log_prob_and_grads(model, x)
        model.memory_saving = "reversible"
        lp, grads = _log_prob_and_grads(model, x)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, lp_ref)
    assert max(_rel_err(g, r) for g, r in zip(grads, g_ref)) < 1e-2


def _maf():
    from glowlab.layers.autoregressive import MaskedAutoregressive

    return MaskedAutoregressive((4,), hidden_features=8)


def _cnf():
    from glowlab.layers.continuous import CNF, ODEMLP

    return CNF(ODEMLP(4, (8,)), event_dim=1, trace="exact", method="rk4", step_size=0.5)


def _mixture():
    from glowlab.layers.coupling.mixture import MixtureCoupling

    return MixtureCoupling(4, 8, event_dim=1, components=2)


def _planar():
    from glowlab.layers.vi import Planar

    return Planar(4)


@pytest.mark.parametrize("build, kind", [(_maf, "sequential"), (_cnf, "numerical"), (_mixture, "numerical"),
                                         (_planar, "none")], ids=["maf", "cnf", "mixture", "planar"])
def test_reversible_refuses_layers_without_a_cheap_inverse(build, kind):
    """Reversible backprop names the layer and its inverse_kind instead of running slowly or inexactly,
    at construction, on assignment of the mode, and in reversible_forward; checkpointing still works."""
    layer = build()
    name = type(layer).__name__
    with pytest.raises(ValueError, match=rf"layer 1 \({name}\) has inverse_kind='{kind}'.*'checkpoint'"):
        MemorySavingSequence([ActNorm(4), layer], memory_saving="reversible")
    seq = MemorySavingSequence([ActNorm(4), layer], memory_saving="checkpoint")
    with pytest.raises(ValueError, match=name):
        seq.memory_saving = "reversible"
    assert seq.memory_saving == "checkpoint"
    with pytest.raises(ValueError, match=kind):
        reversible_forward([layer], torch.randn(2, 4, requires_grad=True))
    y, ladj = seq(torch.randn(3, 4, requires_grad=True))
    (y.sum() + ladj.sum()).backward()


def test_reversible_uses_the_layers_own_recompute_step(monkeypatch):
    """The coupling's public reconstruct_input_and_backward is what the reversible backward calls."""
    calls = []
    original = AffineCoupling.reconstruct_input_and_backward

    def spy(self, *args):
        calls.append(type(self).__name__)
        return original(self, *args)

    monkeypatch.setattr(AffineCoupling, "reconstruct_input_and_backward", spy)
    flows = [InvConv1x1LU(4), AffineCoupling(4, 8, actnorm=False), AffineCoupling(4, 8, event_dim=3, parity=1)]
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y, ladj = reversible_forward(flows, x)
    (y.square().sum() - ladj.sum()).backward()
    assert calls == ["AffineCoupling", "AffineCoupling"]


def test_data_dependent_init_is_found_through_the_hook_not_the_type():
    """A layer of any class that declares DataDependentInit is initialised on the first batch before
    the reversible path runs (execution does not test isinstance(ActNorm))."""
    from glowlab.core import Bijection, DataDependentInit

    class Shift(DataDependentInit, Bijection):
        def __init__(self):
            super().__init__()
            self.loc = torch.nn.Parameter(torch.zeros(4))
            self.done = False

        def needs_data_init(self):
            return not self.done

        def data_init(self, x, context=None):
            with torch.no_grad():
                self.loc.copy_(-x.mean(0))
            self.done = True

        def forward(self, x, context=None):
            if self.training and self.needs_data_init():
                self.data_init(x)
            return x + self.loc, x.new_zeros(x.shape[0])

        def inverse(self, y, context=None):
            return y - self.loc, y.new_zeros(y.shape[0])

    shift = Shift()
    seq = MemorySavingSequence([shift, AffineCoupling(4, 8, event_dim=1)], memory_saving="reversible")
    x = torch.randn(5, 4) + 3
    y, ladj = seq(x.requires_grad_())
    assert shift.done
    torch.testing.assert_close(shift.loc.detach(), -x.detach().mean(0))
    (y.square().sum() - ladj.sum()).backward()
    assert shift.loc.grad is not None
