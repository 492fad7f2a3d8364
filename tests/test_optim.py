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
