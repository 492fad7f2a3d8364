"""notebooks/autoregressive.ipynb runs top to bottom in its quick mode (test_notebooks checks it is committed clean)."""

from __future__ import annotations

import pytest

from tests.analysis.test_notebooks import execute, outputs_text


@pytest.mark.slow
def test_notebook_runs_in_quick_mode(monkeypatch):
    monkeypatch.setenv("GLOWLAB_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    text = outputs_text(nb := execute("autoregressive.ipynb"))
    assert "density mass on the grid" in text and "held-out" in text and "IAF sample" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 4  # masks, conv masks, moons, digit samples
