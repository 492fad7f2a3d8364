"""The 2-D energies of Rezende & Mohamed (2015, Table 1): values, confinement, normaliser."""

from __future__ import annotations

import math

import pytest
import torch

from glowlab.vi import BOX, ENERGY_NAMES, WALL_SCALE, energy


def _hand_u(name: str, z1: float, z2: float) -> float:
    """Table 1 written out with the math module, one point at a time."""
    w1 = math.sin(2 * math.pi * z1 / 4)
    w2 = 3 * math.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + math.exp(-(z1 - 1) / 0.3))
    if name == "u1":
        r = math.hypot(z1, z2)
        return 0.5 * ((r - 2) / 0.4) ** 2 - math.log(math.exp(-0.5 * ((z1 - 2) / 0.6) ** 2)
                                                     + math.exp(-0.5 * ((z1 + 2) / 0.6) ** 2))
    if name == "u2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "u3":
        return -math.log(math.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + math.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    return -math.log(math.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + math.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))


POINTS = [(0.0, 0.0), (1.0, -1.0), (-2.5, 0.7), (3.1, -2.2), (0.4, 1.9)]


@pytest.mark.parametrize("name", ENERGY_NAMES)
def test_energies_match_table_1(name, default_dtype):
    u = energy(name)
    z = torch.tensor(POINTS)
    expected = torch.tensor([_hand_u(name, *p) for p in POINTS])
    torch.testing.assert_close(u(z), expected, rtol=1e-12, atol=1e-12)


def test_values_worked_out_by_hand(default_dtype):
    at = torch.zeros(1, 2)
    # U1(0) = ½ (2/0.4)² − ln(2 e^{−½ (2/0.6)²}) = 12.5 + 50/9 − ln 2
    torch.testing.assert_close(energy("u1")(at), torch.tensor([12.5 + 50 / 9 - math.log(2)]))
    # U2(0, 1) = ½ (1/0.4)² = 3.125 (w1(0) = 0); U2(1, 1) = 0 (w1(1) = 1)
    torch.testing.assert_close(energy("u2")(torch.tensor([[0.0, 1.0], [1.0, 1.0]])), torch.tensor([3.125, 0.0]))
    # U3(0) = −ln(1 + e^{−½ (w2(0)/0.35)²}), w2(0) = 3 e^{−½ (1/0.6)²} = 0.748057
    torch.testing.assert_close(energy("u3")(at), torch.tensor([-0.0970108]), rtol=0, atol=1e-6)
    # U4(0) = −ln(1 + e^{−½ (w3(0)/0.35)²}), w3(0) = 3 σ(−1/0.3) = 0.103336
    torch.testing.assert_close(energy("u4")(at), torch.tensor([-0.6715923]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["u2", "u3", "u4"])
def test_confinement_is_zero_inside_the_box_and_a_soft_wall_outside(name, default_dtype):
    inside = torch.tensor([[-BOX, 0.3], [BOX, -0.2], [0.5, 0.5]])
    torch.testing.assert_close(energy(name)(inside), energy(name, confine=False)(inside), rtol=0, atol=0)
    outside = torch.tensor([[BOX + 0.5, 0.1], [-BOX - 0.5, 0.1]])
    wall = 0.5 * (0.5 / WALL_SCALE) ** 2
    torch.testing.assert_close(energy(name)(outside) - energy(name, confine=False)(outside),
                               torch.full((2,), wall))


def test_u1_is_never_confined(default_dtype):
    far = torch.tensor([[5.0, 0.0]])
    assert torch.equal(energy("u1")(far), energy("u1", confine=False)(far))


def test_log_z_of_u2_has_a_closed_form():
    # ∫ exp(−U2) = (2·BOX + 2·WALL_SCALE·√(π/2)) · 0.4·√(2π): the z2 integral is a Gaussian's at every z1
    expected = math.log((2 * BOX + 2 * WALL_SCALE * math.sqrt(math.pi / 2)) * 0.4 * math.sqrt(2 * math.pi))
    assert energy("u2").log_z() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", ["u1", "u3"])
def test_log_z_converged_in_the_grid(name):
    e = energy(name)
    assert e.log_z(100) == pytest.approx(e.log_z(150), abs=1e-8)


def test_u1_log_z_by_importance_sampling(seeded):
    # an independent check of the quadrature: q = N(0, 2² I), Z = E_q[exp(−U1(z)) / q(z)]
    q = torch.distributions.Normal(0.0, 2.0)
    z = q.sample((400_000, 2)).double()
    log_w = -energy("u1")(z) - q.log_prob(z).sum(1)
    estimate = float(torch.logsumexp(log_w, 0) - math.log(len(z)))
    assert estimate == pytest.approx(energy("u1").log_z(), abs=0.02)


def test_errors():
    with pytest.raises(ValueError, match="u5"):
        energy("u5")
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        energy("u1")(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="infinite mass"):
        energy("u2", confine=False).log_z()
    assert energy("U3").name == "u3"
