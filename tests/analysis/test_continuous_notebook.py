"""notebooks/continuous.ipynb runs top to bottom in its quick mode (test_notebooks checks it is committed clean)."""

from __future__ import annotations

import math
import re

import pytest

from tests.analysis.test_notebooks import execute, image_count, outputs_text

NAME = "continuous.ipynb"


def _figure(text: str, pattern: str) -> list[float]:
    """Every number the notebook printed where ``pattern`` has its group (a float, maybe 'nan' or 'inf')."""
    return [float(v) for v in re.findall(pattern, text)]


@pytest.mark.slow
def test_continuous_notebook_runs_in_quick_mode(monkeypatch):
    monkeypatch.setenv("GLOWLAB_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = execute(NAME)
    text = outputs_text(nb)
    assert "QUICK mode" in text
    assert "NFE per step" in text and "density mass on the grid" in text
    mass = float(text.split("density mass on the grid: ")[1].split()[0])
    assert abs(mass - 1) < 0.05  # the density integrates to about 1 over the grid

    # the density over time: p_t at five times from 0 to T, each integrating to about 1 on the grid
    line = next(ln for ln in text.splitlines() if ln.startswith("mass of p_t on the grid: "))
    masses = _figure(line, r"T: ([-+0-9.eE]+|nan|inf)")
    assert len(masses) == 5 and "t = 0.00 T" in line and "t = 1.00 T" in line
    assert all(abs(m - 1) < 0.05 for m in masses), masses
    # p_0 from the notebook's own solve is the flow's log_prob, and the trajectories end where the layer's forward does
    (p0_gap,) = _figure(text, r"p_0 against the flow's log_prob \(section 2\): max \|difference\| ([-+0-9.eE]+|nan)")
    assert p0_gap < 1e-4
    (end_gap,) = _figure(text, r"10 trajectories; their ends against the layer's forward: max \|difference\| "
                               r"([-+0-9.eE]+|nan)")
    assert end_gap < 1e-4

    assert "standard error" in text and "Hutchinson" in text
    assert "ODESolveError: the ODE solve of a continuous flow took more than max_num_steps=3" in text
    assert "rk4" in text

    # NFE with and without RNODE: both runs report a finite, positive final NFE per step and held-out NLL
    plain = _figure(text, r"no regularisation: final NFE per step ([-+0-9.eE]+|nan|inf)")
    rnode = _figure(text, r"RNODE, weights [0-9.eE+-]+: final NFE per step ([-+0-9.eE]+|nan|inf)")
    held_out = _figure(text, r"held-out NLL ([-+0-9.eE]+|nan|inf) nats per point\n")
    assert len(plain) == 1 and len(rnode) == 1 and len(held_out) == 2
    assert all(math.isfinite(v) and v > 0 for v in plain + rnode)
    assert all(math.isfinite(v) for v in held_out)

    images = image_count(nb)
    # training curves and NFE, density and samples, p_t over time, trajectories, exact against Hutchinson,
    # NFE with and without RNODE
    assert images == 6
