"""The optimiser factory: every implementation computes the same update; bad names are refused."""

import pytest
import torch

from glowlab.optim import make_optimizer


def _run(name, implementation, steps=5):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, dtype=torch.float32)) for s in [(3, 4), (7,), (2, 2, 3)]]
    opt = make_optimizer(name, params, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-3, implementation=implementation)
    for k in range(steps):
        opt.zero_grad()
        sum(((p - k) ** 2).sum() for p in params).backward()
        opt.step()
    return opt, [p.detach().clone() for p in params]


@pytest.mark.parametrize("name", ["adam", "adamw", "adamax"])
def test_implementations_agree(name):
    _, ref = _run(name, "forloop")
    impls = ["auto", "foreach"] + (["fused"] if name != "adamax" else [])
    for impl in impls:
        _, out = _run(name, impl)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    start = [p for p in _run(name, "forloop", steps=0)[1]]
    assert not torch.allclose(ref[0], start[0])  # the steps did move the parameters


def test_auto_picks_fast_kernels():
    opt, _ = _run("adam", "auto", steps=0)
    assert opt.defaults["fused"] is True
    opt, _ = _run("adamax", "auto", steps=0)
    assert opt.defaults["foreach"] is True


@pytest.mark.parametrize("name, impl, needle", [
    ("sgd", "auto", "module.optimizer"),
    ("adam", "fast", "module.optimizer_impl"),
    ("adamax", "fused", "optimizer_impl=foreach"),
])
def test_bad_choices_name_the_key(name, impl, needle):
    with pytest.raises(ValueError, match=needle):
        make_optimizer(name, [torch.nn.Parameter(torch.zeros(1))], lr=1e-3, implementation=impl)


def test_auto_falls_back_to_foreach_without_a_fused_kernel(monkeypatch):
    import torch.utils._foreach_utils as fu

    monkeypatch.setattr(fu, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    opt, _ = _run("adam", "auto", steps=1)  # CPU parameters, "no" CPU kernel: must still step
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]


def test_fp16_mixed_precision_avoids_the_fused_kernel():
    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer("adam", p, lr=1e-3, fused_ok=False)
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
    with pytest.raises(ValueError, match="16-mixed"):
        make_optimizer("adam", p, lr=1e-3, implementation="fused", fused_ok=False)


@pytest.mark.parametrize("saved, loaded", [("fused", "forloop"), ("forloop", "fused"), ("foreach", "fused")])
def test_loading_a_state_keeps_the_kernel_chosen_at_construction(saved, loaded):
    """PyTorch copies ``fused``/``foreach`` from the saved groups; ours keep their own kernel, and
    the moments and step count still come from the checkpoint."""
    src, _ = _run("adam", saved, steps=3)
    state = src.state_dict()
    params = [torch.nn.Parameter(p.detach().clone()) for p in src.param_groups[0]["params"]]
    dst = make_optimizer("adam", params, lr=1e-2, implementation=loaded)
    dst.load_state_dict(state)
    group = dst.param_groups[0]
    assert bool(group["fused"]) == (loaded == "fused")
    assert bool(group["foreach"]) == (loaded == "foreach")
    assert group["lr"] == 1e-2 and group["betas"] == (0.8, 0.99)  # the rest comes from the checkpoint
    for p_src, p_dst in zip(src.param_groups[0]["params"], params):
        torch.testing.assert_close(dst.state[p_dst]["exp_avg"], src.state[p_src]["exp_avg"])
        assert float(dst.state[p_dst]["step"]) == 3
    for p in params:
        p.grad = torch.ones_like(p)
    dst.step()  # the loaded state works with the kept kernel


@pytest.mark.parametrize("impl", ["fused", "foreach", "forloop"])
def test_steps_bump_the_parameters_versions(impl):
    """Every optimiser from make_optimizer bumps its parameters' version counters at each step (the
    fused kernel alone does not), so caches keyed on them (the 1x1 convs' eval weights) see the
    update; the hook is this optimiser's own, not a process-wide one."""
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(2)]
    opt = make_optimizer("adam", params, lr=1e-2, implementation=impl)
    for p in params:
        p.grad = torch.ones_like(p)
    before = [p._version for p in params]
    opt.step()
    assert all(p._version > b for p, b in zip(params, before))
    other = torch.nn.Parameter(torch.randn(3))
    plain = torch.optim.Adam([other], lr=1e-2, fused=True)
    other.grad = torch.ones_like(other)
    v = other._version
    plain.step()
    assert other._version == v  # untouched: no global hook
