"""notebooks/continuous.ipynb is committed clean and runs top to bottom in its quick mode."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "continuous.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_notebook_runs_in_quick_mode(monkeypatch):
    monkeypatch.setenv("GLOWLAB_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOK.parent)}}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "QUICK mode" in text
    assert "NFE per step" in text and "density mass on the grid" in text
    mass = float(text.split("density mass on the grid: ")[1].split()[0])
    assert abs(mass - 1) < 0.05  # the density integrates to about 1 over the grid
    assert "standard error" in text and "Hutchinson" in text
    assert "ODESolveError: the ODE solve of a continuous flow took more than max_num_steps=3" in text
    assert "rk4" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 3  # training curves and NFE, density and samples, exact against Hutchinson
