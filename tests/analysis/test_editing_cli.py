"""sample.py mode=directions and mode=manipulate on the tiny digits checkpoint."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from glowlab.analysis.cli import _sample
from glowlab.analysis.editing import compute_directions, directions_path, load_directions, manipulate_to_file
from glowlab.analysis.loading import load_model
from glowlab.analysis.manipulation import latent_direction
from glowlab.likelihood import dequantize
from tests.analysis.conftest import grid_size, read_json, read_png
from tests.training.conftest import compose_config, run_script


def sample_cli(overrides: list[str], output_dir) -> dict:
    """What ``python sample.py OVERRIDES`` runs, in this process (the config composed by Hydra)."""
    return _sample.__wrapped__(compose_config("sample", overrides, output_dir))


@pytest.fixture
def run_ckpt(tiny_ckpt, tmp_path):
    """A copy of the tiny checkpoint in its own run folder, so files written next to it are the test's."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    return shutil.copy(tiny_ckpt, tmp_path / "run" / "checkpoints" / "best.ckpt")


def _train_split(ckpt):
    trained = load_model(ckpt)
    ds = trained.datamodule("fit").train_dataset
    x_int = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([ds[i][1] for i in range(len(ds))])
    return trained, dequantize(x_int, trained.n_bits, noise=False), y


def test_directions_cli_prints_counts_and_norms_and_saves_exact_means(run_ckpt, capsys):
    sample_cli([f"ckpt_path={run_ckpt}", "mode=directions", "attribute=[class:7,class:1]"], run_ckpt.parent)
    stdout = capsys.readouterr().out
    trained, x, y = _train_split(run_ckpt)
    store = load_directions(directions_path(run_ckpt), run_ckpt)
    for k in (7, 1):
        entry = store["attributes"][f"class:{k}"]
        with_k, without = int((y == k).sum()), int((y != k).sum())
        assert (entry["count_with"], entry["count_without"], entry["unknown"]) == (with_k, without, 0)
        expected = latent_direction(trained.model, x[y == k], x[y != k])
        for got, want in zip(entry["direction"], expected):
            assert torch.allclose(got, want, atol=1e-5)
        norms = ", ".join(f"{v:.3f}" for v in entry["norms"])
        line = (f"class:{k}: {with_k} images with, {without} without (0 unknown); direction norm per level "
                f"(finest first): [{norms}]")
        assert line in stdout, stdout
    summary = read_json(directions_path(run_ckpt).with_suffix(".json"))
    assert summary["attributes"]["class:7"]["count_with"] == int((y == 7).sum())


def test_manipulate_cli_writes_the_grid_and_sidecar(run_ckpt, tmp_path, capsys):
    """Rows of test images edited at 5 alphas on the top level only; the middle column (alpha = 0)
    is the test image itself, pixel for pixel; the sidecar records the settings."""
    out = tmp_path / "edit.png"
    sample_cli([f"ckpt_path={run_ckpt}", "mode=manipulate", "attribute=class:7", "levels=[1]", "rows=4",
                "alpha_steps=5", "limit=50", f"out={out}"], tmp_path)
    stdout = capsys.readouterr().out
    info = read_json(out.with_suffix(".json"))
    assert (info["attribute"], info["levels"], info["alphas"], info["rows"], info["nrow"]) == \
        ("class:7", [1], [-1.0, -0.5, 0.0, 0.5, 1.0], 4, 5)
    assert info["row_has_attribute"] == [0, 0, 1, 1] and info["computed_directions"]
    assert (info["count_with"], info["count_without"]) == (50, 50)
    assert info["reconstruction_max_abs_error"] < 1e-4 and info["reconstruction_pixels_changed"] == 0
    assert re.search(r"reconstruction at alpha=0: max abs error .*, 0 pixels changed", stdout)
    raw = read_png(tmp_path / "edit_raw.png")
    assert raw.shape[:2] == grid_size(4, 5, 8, 8)
    tiles = np.stack([[raw[1 + r * 9: 9 + r * 9, 1 + c * 9: 9 + c * 9, 0] for c in range(5)] for r in range(4)])
    test_set = load_model(run_ckpt).datamodule("test").test_dataset
    for r, i in enumerate(info["test_indices"]):
        x_int, y = test_set[i]
        assert (y == 7) == bool(info["row_has_attribute"][r])
        assert np.allclose(tiles[r, 2], x_int[0].numpy() / 31, atol=1 / 255)  # alpha = 0
    assert not all(np.array_equal(tiles[r, 0], tiles[r, 4]) for r in range(4))
    assert directions_path(run_ckpt).is_file()  # next to the checkpoint


def test_directions_belong_to_their_checkpoint_and_accumulate(run_ckpt, tmp_path):
    compute_directions(run_ckpt, "class:3", limit=20)
    compute_directions(run_ckpt, ["class:4"], limit=20)
    store = load_directions(directions_path(run_ckpt), run_ckpt)
    assert set(store["attributes"]) == {"class:3", "class:4"}
    assert (store["attributes"]["class:3"]["count_with"], store["attributes"]["class:3"]["count_without"]) == (20, 20)
    ckpt = torch.load(run_ckpt, map_location="cpu", weights_only=False)
    ckpt["epoch"] = 99  # another checkpoint: its directions must be recomputed
    torch.save(ckpt, run_ckpt)
    assert load_directions(directions_path(run_ckpt), run_ckpt)["attributes"] == {}
    info = manipulate_to_file(run_ckpt, "class:3", rows=2, alpha_steps=3, limit=20, out=tmp_path / "m.png")
    assert info["computed_directions"]


def test_bad_attributes_are_named(run_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"attribute='mass:0.9' has no training image with it \(0 with"):
        compute_directions(run_ckpt, "mass:0.9")
    with pytest.raises(ValueError, match=r"unknown attribute='Smiling'.*class:0..class:9, mass:T"):
        compute_directions(run_ckpt, "Smiling")
    with pytest.raises(ValueError, match="attribute= is required"):
        compute_directions(run_ckpt, None)
    with pytest.raises(ValueError, match="alpha_steps= must be an odd integer >= 3"):
        manipulate_to_file(run_ckpt, "class:3", alpha_steps=4, out=tmp_path / "m.png")
    with pytest.raises(ValueError, match="one attribute at a time"):
        manipulate_to_file(run_ckpt, ["class:3", "class:4"], out=tmp_path / "m.png")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="pass directions="):
        compute_directions(run_ckpt, "class:3", directions=blocker / "d.pt")


@pytest.mark.slow
def test_sample_script_end_to_end(run_ckpt, tmp_path):
    """The script itself: directions, then an edit that reuses them."""
    hydra_dir = f"hydra.run.dir={tmp_path / 'hydra'}"
    proc = run_script("sample.py", f"ckpt_path={run_ckpt}", "mode=directions", "attribute=class:7", hydra_dir)
    assert proc.returncode == 0 and "class:7: " in proc.stdout, proc.stderr[-3000:]
    proc = run_script("sample.py", f"ckpt_path={run_ckpt}", "mode=manipulate", "attribute=class:7", "rows=2",
                      f"out={tmp_path / 'e.png'}", hydra_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not read_json(tmp_path / "e.json")["computed_directions"] and (tmp_path / "e.png").is_file()
