"""notebooks/continuous.ipynb runs top to bottom in its quick mode (test_notebooks checks it is committed clean)."""

from __future__ import annotations

import pytest

from tests.analysis.test_notebooks import execute, outputs_text

NAME = "continuous.ipynb"


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
    assert "standard error" in text and "Hutchinson" in text
    assert "ODESolveError: the ODE solve of a continuous flow took more than max_num_steps=3" in text
    assert "rk4" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 3  # training curves and NFE, density and samples, exact against Hutchinson
