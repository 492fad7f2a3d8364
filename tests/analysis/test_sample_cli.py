"""sample.py: grids of the right size, temperature rows, interpolation endpoints, reconstructions."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from glowlab.analysis.loading import load_model
from glowlab.analysis.sampling import interpolate, pick_test_images, sample_grid, sample_to_file, temperature_grid
from glowlab.likelihood import dequantize
from glowlab.models import Glow
from tests.analysis.conftest import grid_size, read_json, read_png
from tests.training.conftest import run_script

MODES = ("grid", "temperatures", "interpolate", "reconstruct")


def tiles(img: np.ndarray, rows: int, cols: int, size: int = 8, padding: int = 1) -> np.ndarray:
    """Cut a save_image grid ``[H, W, 3]`` into ``[rows, cols, size, size, 3]`` tiles."""
    step = size + padding
    return np.stack([np.stack([img[padding + r * step: padding + r * step + size,
                                   padding + c * step: padding + c * step + size]
                               for c in range(cols)]) for r in range(rows)])


def test_sample_cli_writes_every_mode(tiny_ckpt, tmp_path):
    """One multirun over the four modes: each raw PNG has rows x cols tiles of 8x8 plus 1-pixel
    padding, the main PNG is it enlarged (nearest neighbour) to at least 256 px wide, a JSON sidecar
    says so, and the content has the property of its mode."""
    sweep = tmp_path / "sweep"
    proc = run_script("sample.py", "-m", f"ckpt_path={tiny_ckpt}", f"mode={','.join(MODES)}", "n=16",
                      f"hydra.sweep.dir={sweep}", "out=${hydra:runtime.output_dir}/out.png")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {"grid": (4, 4), "temperatures": (6, 8), "interpolate": (4, 8), "reconstruct": (4, 8)}
    for job, mode in enumerate(MODES):
        png, info = sweep / str(job) / "out_raw.png", read_json(sweep / str(job) / "out.json")
        rows, cols = expected[mode]
        assert (info["mode"], info["rows"], info["nrow"], info["non_finite"]) == (mode, rows, cols, 0)
        img = read_png(png)
        assert img.shape[:2] == grid_size(rows, cols, 8, 8), mode
        k = info["scale"]
        assert (k - 1) * img.shape[1] < 256 <= k * img.shape[1]
        big = read_png(sweep / str(job) / "out.png")
        assert np.array_equal(big, img.repeat(k, 0).repeat(k, 1))
        t = tiles(img, rows, cols)
        assert np.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
        assert (t.reshape(rows * cols, -1).max(1) > 0).all(), f"{mode}: a blank tile"
        if mode == "temperatures":  # T=0 decodes the prior means: the whole row is one image
            assert np.ptp(t[0], axis=0).max() == 0
            assert np.ptp(t[-1], axis=0).max() > 0
        if mode == "reconstruct":  # real rows and reconstructed rows are pixel-identical
            assert np.array_equal(t[0::2], t[1::2]) and info["pixels_changed"] == 0
        if mode == "interpolate":
            assert info["endpoint_max_abs_error"] < 1e-4
            assert not np.array_equal(t[:, 0], t[:, -1])
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok"] * 4


def test_grid_tensor_is_finite_in_range_and_reproducible(tiny_ckpt):
    model = load_model(tiny_ckpt).model
    a, nrow = sample_grid(model, 5, n=12, temperature=1.0, seed=3)
    b, _ = sample_grid(model, 5, n=12, temperature=1.0, seed=3)
    c, _ = sample_grid(model, 5, n=12, temperature=1.0, seed=4)
    assert a.shape == (12, 1, 8, 8) and nrow == 4
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_interpolation_endpoints_reconstruct_the_real_images(tiny_ckpt, dtype):
    """Linear interpolation of every level's z: t=0 and t=1 decode to the two real images within
    1e-4 (model space); the middle differs from both."""
    trained = load_model(tiny_ckpt)
    trained.model.to(dtype)
    x_int, _, _ = pick_test_images(trained.datamodule("test").test_dataset, 6, seed=1)
    x = dequantize(x_int, trained.n_bits, noise=False, dtype=dtype)
    path = interpolate(trained.model, x[:3], x[3:], steps=5)
    assert path.shape == (3, 5, 1, 8, 8) and path.dtype == dtype
    assert (path[:, 0] - x[:3]).abs().max() < 1e-4
    assert (path[:, -1] - x[3:]).abs().max() < 1e-4
    assert (path[:, 2] - x[:3]).abs().amax((1, 2, 3)).min() > 1e-2


def test_conditional_model_samples_one_row_per_class():
    """A class-conditional model: 10 rows of nrow samples; at T=0 a row is one image and rows differ."""
    model = Glow(image_shape=(1, 8, 8), levels=2, depth=1, hidden_channels=8, num_classes=10).eval()
    with torch.no_grad():
        model.top_prior.class_embedding.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    images, nrow = sample_grid(model, 5, n=30, temperature=0.0)
    assert nrow == 3 and images.shape == (30, 1, 8, 8)
    rows = images.view(10, 3, -1)
    assert (rows - rows[:, :1]).abs().max() == 0
    assert len({tuple(r[0].tolist()) for r in rows}) > 1


def test_grids_name_a_tensor_context_they_cannot_choose():
    """A density conditioned on a tensor (context_kind "tensor") gets a ValueError saying how to
    sample it, not a ContextError from deep inside the model."""
    model = Glow(image_shape=(1, 4, 4), levels=1, depth=1, hidden_channels=4, context_features=3).eval()
    assert model.context_kind == "tensor" and model.num_classes == 0
    for grid in (sample_grid, temperature_grid):
        with pytest.raises(ValueError, match=r"tensor context \[B, 3\].*model.sample\(n, context=...\)"):
            grid(model, 5)


def test_nan_samples_are_counted_not_hidden(tiny_ckpt, tmp_path):
    """A model whose prior is NaN: every sample is reported as non-finite and drawn black."""
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=False)
    key = next(k for k in ckpt["state_dict"] if k.endswith("top_prior.top"))
    ckpt["state_dict"][key] = torch.full_like(ckpt["state_dict"][key], float("nan"))
    ckpt.pop("glowlab_state_dict_sha256", None)  # edited on purpose
    broken = tmp_path / "nan.ckpt"
    torch.save(ckpt, broken)
    info = sample_to_file(broken, "grid", n=9, temperature=1.0, out=tmp_path / "nan.png")
    assert info["non_finite"] == 9 == read_json(tmp_path / "nan.json")["non_finite"]
    assert read_png(tmp_path / "nan.png").max() == 0 and read_png(tmp_path / "nan_raw.png").max() == 0


@pytest.mark.parametrize("kind", ["glow", "maf"])
def test_draw_is_seeded_for_every_density(kind):
    """The same seeded generator gives the same samples, whether or not the density's sample takes a
    generator (MAF does not); the global RNG is untouched; the model is called with context= (no
    DeprecationWarning from the pre-0.2 forms)."""
    import warnings

    from glowlab.analysis.latents import draw
    from glowlab.models import MAF

    model = (Glow(image_shape=(1, 8, 8), levels=2, depth=1, hidden_channels=8) if kind == "glow"
             else MAF(image_shape=(1, 2, 2), layers=1, hidden_features=8)).eval()
    state = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        a, b, c = (draw(model, 3, None, 0.7, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)
