"""The notebooks run top to bottom (the quickstart in its quick mode), so they cannot rot."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from glowlab.training.config import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"


def execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def image_count(nb) -> int:
    """PNG figures among the executed notebook's outputs."""
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def outputs_text(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.parametrize("name", sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")))
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOWLAB_QUICK", "1")
    monkeypatch.setenv("GLOWLAB_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    nb = execute("quickstart.ipynb")
    text = outputs_text(nb)
    assert "test bits/dim" in text and "AUROC bpd" in text
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 4  # sample grid, temperature grid, two histograms
    run = next(tmp_path.glob("quickstart_*"))
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "scores" / "noise_k1" / "scores.csv").is_file()


@pytest.mark.slow
def test_flows_explained_runs():
    nb = execute("flows_explained.ipynb")
    text = outputs_text(nb)
    assert "whole-model round trip" in text and "AffineCoupling" in text
