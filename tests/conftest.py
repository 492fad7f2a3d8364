"""Shared pytest options, fixtures and helpers.

Sections are kept separate so that other parts of the test suite can add their own fixtures
below without touching these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn

# ``--doctest-modules`` (pyproject.toml) would import every conftest.py as a module named
# "conftest" to look for docstring examples, and the second one clashes with the first
collect_ignore_glob = ["*conftest.py"]

# =============================================================================================
# Core layer (glowlab.flows, glowlab.models, glowlab.likelihood): dtype option and numerics
# =============================================================================================

CORE_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def pytest_addoption(parser):
    """``--dtype``: the default torch dtype of the numeric tests (float64 unless told otherwise)."""
    parser.addoption(
        "--dtype",
        action="store",
        default="float64",
        choices=sorted(CORE_DTYPES),
        help="default torch dtype for the numeric tests of the flows, models and likelihood",
    )


def pytest_configure(config):
    """Under ``pytest -n N`` give each worker its share of the cores: N workers each running
    torch's default of one intra-op thread per core oversubscribe the CPU, and the tiny tensors of
    these tests then run many times slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@dataclass(frozen=True)
class Tolerances:
    """Tolerances of the numeric checks for one dtype."""

    round_trip_atol: float  # |inverse(forward(x)) - x|
    logdet_rtol: float  # logdet against slogdet of the autograd Jacobian
    logdet_atol: float  # for volume-preserving maps, whose logdet is 0
    closed_form_rtol: float  # a formula against the same formula worked out by hand


CORE_TOLERANCES = {
    torch.float64: Tolerances(round_trip_atol=1e-10, logdet_rtol=1e-8, logdet_atol=1e-10, closed_form_rtol=1e-12),
    torch.float32: Tolerances(round_trip_atol=1e-4, logdet_rtol=1e-4, logdet_atol=1e-4, closed_form_rtol=1e-6),
}


@pytest.fixture
def numeric_dtype(request) -> torch.dtype:
    """The dtype chosen with ``--dtype`` (float64 by default)."""
    return CORE_DTYPES[request.config.getoption("--dtype")]


@pytest.fixture
def default_dtype(numeric_dtype):
    """Make ``numeric_dtype`` torch's default dtype for the test and restore the previous one afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(numeric_dtype)
    try:
        yield numeric_dtype
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def tol(numeric_dtype) -> Tolerances:
    """Tolerances matching ``--dtype``."""
    return CORE_TOLERANCES[numeric_dtype]


@pytest.fixture
def single_thread():
    """Run the test on one intra-op thread and restore the previous count afterwards: the tensors
    here are tiny, and extra threads only contend with other processes for the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def seeded():
    """Seed torch's global RNG so every test is reproducible on its own (and under xdist)."""
    torch.manual_seed(0)


def perturb_parameters(module: nn.Module, scale: float = 0.1, seed: int = 1234) -> None:
    """Add Gaussian noise of std ``scale`` to every parameter, moving zero-initialised layers
    (coupling outputs, priors) away from the identity so numeric checks are not trivially exact."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            p.add_(scale * noise)


def standard_normal_nll(y: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of a single flow under a standard-normal latent (training loss)."""
    log_prior = -0.5 * (y.flatten(1) ** 2 + torch.log(torch.tensor(2 * torch.pi, dtype=y.dtype))).sum(1)
    return -(log_prior + logdet).mean()


def adam_steps(params, loss_fn: Callable[[], torch.Tensor], steps: int = 3, lr: float = 1e-2) -> None:
    """Run a few Adam steps on ``loss_fn()`` (no-op for a parameterless module)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        assert torch.isfinite(loss), f"training loss is not finite: {loss}"
        loss.backward()
        opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params)), "the optimiser changed nothing"


def jacobian_logdet(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
    """``log|det|`` of the Jacobian of the flattened per-sample map ``x[i] -> fn(x)[i]``.

    ``fn`` maps the batch ``x`` to a ``[B, ...]`` tensor. Returns ``(logabsdet [B], cross)`` where
    ``cross`` is the largest entry of the Jacobian between *different* samples (it must be 0:
    samples are transformed independently).
    """
    batch = x.shape[0]

    def flat_fn(flat_x: torch.Tensor) -> torch.Tensor:
        return fn(flat_x.view_as(x)).reshape(batch, -1)

    jac = torch.autograd.functional.jacobian(flat_fn, x.reshape(batch, -1), vectorize=True)
    blocks = torch.stack([jac[i, :, i, :] for i in range(batch)])
    eye = torch.eye(batch, dtype=torch.bool)
    cross = jac.permute(0, 2, 1, 3)[~eye].abs().max() if batch > 1 else jac.new_zeros(())
    return torch.linalg.slogdet(blocks).logabsdet, cross


def assert_every_parameter_has_gradient(module: nn.Module) -> None:
    """Every parameter of ``module`` has a finite gradient that is not all zero."""
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().max() > 0, f"{name} has an all-zero gradient"


def assert_same_state(module: nn.Module, other: nn.Module) -> None:
    """The two modules' state dicts (parameters and buffers) are bit-identical."""
    other_state = other.state_dict()
    for key, value in module.state_dict().items():
        assert torch.equal(value, other_state[key]), f"{key} differs"


@pytest.fixture
def core_helpers():
    """The helper functions above, for test modules that cannot import ``conftest`` directly."""
    return CoreHelpers


class CoreHelpers:
    perturb_parameters = staticmethod(perturb_parameters)
    standard_normal_nll = staticmethod(standard_normal_nll)
    adam_steps = staticmethod(adam_steps)
    jacobian_logdet = staticmethod(jacobian_logdet)
    assert_every_parameter_has_gradient = staticmethod(assert_every_parameter_has_gradient)
    assert_same_state = staticmethod(assert_same_state)
