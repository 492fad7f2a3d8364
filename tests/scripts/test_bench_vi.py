"""scripts/bench_vi.py: normflows' wrapped planar flow is the density it claims to be, the two
libraries' planar maps agree given the same parameters and noise, and --quick writes sane numbers."""

from __future__ import annotations

import argparse
import copy
import json
import math

import pytest
import torch

from glowlab.layers.vi import Planar
from glowlab.vi import energy
from tests.scripts.script_loader import load_script as load_named_script

pytest.importorskip("normflows")


def load_script():
    return load_named_script("bench_vi")


bench = load_script()


def _violating(u: torch.Tensor, w: torch.Tensor, scale: float) -> None:
    """Free parameters with wᵀu = −3 (the unconstrained map is not invertible) and ‖w‖ ≠ 1 (so that a
    fix dividing by ‖w‖ instead of ‖w‖² would be caught)."""
    with torch.no_grad():
        w.copy_(scale * torch.tensor([1.0, 2.0]).view_as(w))
        u.copy_(-3.0 * w / w.square().sum())


def test_normflows_wrapper_log_q_is_the_change_of_variables(default_dtype, seeded, core_helpers):
    q = bench.NormflowsPlanarFlow(3, trainable_base=True)
    core_helpers.perturb_parameters(q, scale=0.5)
    _violating(q.flows[1].u, q.flows[1].w, 1.7)

    def push(z):
        for layer in q.flows:
            z = layer(z)[0]
        return z

    torch.manual_seed(3)
    x, log_q = q.rsample_and_log_prob(7)
    torch.manual_seed(3)  # the same base draws z0 (DiagGaussian draws one randn(n, 2))
    loc, log_scale = q.base.loc, q.base.log_scale
    z0 = loc + log_scale.exp() * torch.randn(7, 2)
    torch.testing.assert_close(push(z0), x)
    log_q0 = torch.distributions.Normal(loc, log_scale.exp()).log_prob(z0).sum(1)
    logdet, cross = core_helpers.jacobian_logdet(push, z0)
    assert cross == 0
    torch.testing.assert_close(log_q, log_q0 - logdet, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("w_scale", [0.3, 1.0, 2.5])
def test_the_two_planar_layers_agree_given_the_same_parameters(w_scale, default_dtype, seeded):
    import normflows as nf

    mine, theirs = Planar(2), nf.flows.Planar((2,))
    _violating(mine.u, mine.w, w_scale)
    with torch.no_grad():
        mine.b.fill_(0.4)
        theirs.u.copy_(mine.u.view_as(theirs.u))
        theirs.w.copy_(mine.w.view_as(theirs.w))
        theirs.b.copy_(mine.b.view_as(theirs.b))
    z = 2 * torch.randn(16, 2)
    y, ladj = mine(z)
    y_nf, ladj_nf = theirs(z)
    torch.testing.assert_close(y_nf, y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_nf, ladj, rtol=1e-10, atol=1e-12)


def test_shared_parameters_and_seed_give_the_same_draws_and_densities(default_dtype, core_helpers):
    mine, theirs = bench.build("glowlab", 4, True, 0), bench.build("normflows", 4, True, 0)
    core_helpers.perturb_parameters(mine, scale=0.3)
    bench.share_parameters(mine, theirs)
    torch.manual_seed(11)
    x, log_q = mine.rsample_and_log_prob(32)
    torch.manual_seed(11)
    x_nf, log_q_nf = theirs.rsample_and_log_prob(32)
    torch.testing.assert_close(x_nf, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_q_nf, log_q, rtol=1e-10, atol=1e-10)


@pytest.mark.usefixtures("single_thread")
def test_interleaved_trainers_see_the_same_noise():
    """Two copies of one model, trained in turn from the same seed, stay bit-identical: each trainer
    keeps its own generator state, whatever the other draws in between."""
    args = argparse.Namespace(lr=1e-2, warmup_steps=2)
    model = bench.build("glowlab", 2, False, 0)
    a, b = bench.Trainer(model, args, 5), bench.Trainer(copy.deepcopy(model), args, 5)
    initial_u = model.sampler[0].u.detach().clone()
    target = energy("u1")
    for _ in range(3):
        a.step(target, 16, 0.5)
        torch.randn(3)  # anything else that draws in between
        b.step(target, 16, 0.5)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(a.model.sampler[0].u, initial_u)  # it did train
    assert a.nonfinite == 0 and len(a.times) == 3


def _check_kl(row: dict) -> None:
    # KL >= 0 up to the Monte-Carlo error of the ELBO and the quadrature's error in log Z
    assert math.isfinite(row["kl"]) and math.isfinite(row["kl_se"])
    assert row["kl"] >= -5 * row["kl_se"] - 1e-3, row


@pytest.mark.usefixtures("single_thread")
def test_shared_init_quick_run_gives_the_same_kl_for_both_libraries(tmp_path):
    """The same map, the same initial parameters, the same noise and the same loss: the two libraries'
    fits differ only by float32 rounding."""
    out = tmp_path / "bench.json"
    data = bench.main(["--quick", "--init", "shared", "--targets", "u1", "--lengths", "2", "--steps", "20",
                       "--out", str(out)])
    rows = {r["library"]: r for r in data["runs"]}
    assert set(rows) == {"glowlab", "normflows"}
    for row in rows.values():
        _check_kl(row)
    assert abs(rows["glowlab"]["kl"] - rows["normflows"]["kl"]) < 1e-3
    assert json.loads(out.read_text())["config"]["init"] == "shared"


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_quick_run_writes_finite_numbers_and_a_full_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["config"]["eval_samples"] >= 10_000 and data["config"]["steps"] == 30
    assert set(data["summary"]) == {"u1", "u2", "u3", "u4"}
    for target, by_k in data["summary"].items():
        assert set(by_k) == {"2", "8"}, target
        for by_lib in by_k.values():
            assert set(by_lib) == {"glowlab", "normflows"}
    assert len(data["runs"]) == 4 * 2 * 2
    for row in data["runs"]:
        _check_kl(row)
        assert row["n"] >= 10_000 and row["s_per_step"] > 0
        assert row["log_z"] == pytest.approx(energy(row["target"]).log_z())
    table = capsys.readouterr().out
    for target in ("u1", "u2", "u3", "u4"):
        for k in (2, 8):
            assert f"| {target} | {k} |" in table


def test_bad_arguments_name_the_value():
    with pytest.raises(SystemExit):
        bench.parse(["--eval-samples", "100"])
    with pytest.raises(SystemExit):
        bench.parse(["--lengths", "0"])
