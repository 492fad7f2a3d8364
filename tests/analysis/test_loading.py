"""The after-training loader: density and data module from a checkpoint, without the training glue."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from glowlab.analysis.grids import save_grid, upscale_nearest
from glowlab.analysis.loading import check_writable, load_model
from glowlab.training.checkpoint_checks import CheckpointError
from glowlab.training.config import PROJECT_ROOT
from glowlab.training.module import FlowModule
from tests.analysis.conftest import read_png


def _with_ema(tiny_ckpt: Path, out: Path) -> Path:
    """The tiny checkpoint with EMA buffers whose values differ from the live weights."""
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=False)
    model = load_model(tiny_ckpt).model
    names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
    g = torch.Generator().manual_seed(0)
    for i, name in enumerate(names):
        live = ckpt["state_dict"][f"model.{name}"]
        ckpt["state_dict"][f"ema.shadow_{i}"] = live + 0.01 * torch.randn(live.shape, generator=g)
    ckpt["state_dict"]["ema.num_updates"] = torch.tensor(5)
    ckpt["hyper_parameters"]["ema_decay"] = 0.9
    ckpt.pop("glowlab_state_dict_sha256", None)  # edited on purpose
    torch.save(ckpt, out)
    return out


def test_same_density_as_the_training_module(tiny_ckpt, tmp_path):
    """load_model gives the weights FlowModule uses for evaluation: the live ones, or the EMA ones."""
    x = torch.rand(5, 1, 8, 8) - 0.5
    for path in (tiny_ckpt, _with_ema(tiny_ckpt, tmp_path / "ema.ckpt")):
        trained = load_model(path)
        module = FlowModule.load_from_checkpoint(str(path), map_location="cpu").eval()
        with torch.no_grad():
            if module.ema is not None:
                with module.ema.swapped_in(module.model):
                    expected = module.model.log_prob(x)
            else:
                expected = module.model.log_prob(x)
            assert torch.equal(trained.model.log_prob(x), expected)
        assert trained.ema == (module.ema is not None) and not trained.model.training
    assert not load_model(tmp_path / "ema.ckpt", ema=False).ema


def test_data_module_overrides_and_shape(tiny_ckpt):
    trained = load_model(tiny_ckpt, data={"test_limit": 7})
    dm = trained.datamodule("test")
    assert len(dm.test_dataset) == 7 and dm is trained.datamodule()
    assert (trained.n_bits, trained.image_shape, trained.num_dims, trained.num_classes) == (5, (1, 8, 8), 64, 0)


def test_bad_checkpoints_are_named(tiny_ckpt, tmp_path):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["model_config"]["depth"] = 3
    torch.save(ckpt, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=r"other\.ckpt .*does not fit the model"):
        load_model(tmp_path / "other.ckpt")
    ckpt["hyper_parameters"].pop("data_config")
    torch.save(ckpt, tmp_path / "nodata.ckpt")
    with pytest.raises(CheckpointError, match="nodata.ckpt .*holds no data_config"):
        load_model(tmp_path / "nodata.ckpt")


@pytest.mark.parametrize("name", ["glow_class_conditional", "realnvp"])
def test_glowlab_0_1_checkpoints_keep_their_density(name, tiny_ckpt, tmp_path):
    """0.1 checkpoints load with the density they were trained as (glowlab.models.compat), as
    FlowModule loads them: a class-conditional Glow whose labels reach the top prior only, and a
    RealNVP with unbounded translations (its config has no translation_bound)."""
    case = torch.load(PROJECT_ROOT / "tests" / "models" / "data" / "glowlab_0_1_state_dicts.pt",
                      weights_only=False)[name]
    data_config = torch.load(tiny_ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["data_config"]
    torch.save({"state_dict": {f"model.{k}": v for k, v in case["state_dict"].items()}, "global_step": 10,
                "hyper_parameters": {"model_config": {"_target_": case["target"], **case["kwargs"]}, "n_bits": 5,
                                     "data_config": data_config}}, tmp_path / "old.ckpt")
    model = load_model(tmp_path / "old.ckpt").model
    if name == "realnvp":
        assert model.config["translation_bound"] is None
    else:
        assert not model.condition_couplings
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(case["x"], case["y"]), case["log_prob"], rtol=1e-6, atol=1e-5)


def test_analysis_does_not_import_the_training_glue():
    """The after-training tools need a density, a data module and the checkpoint reader only: no
    LightningModule, callbacks or train/eval runner (GUIDE section 1)."""
    banned = ("glowlab.training.module", "glowlab.training.run", "glowlab.training.callbacks", "glowlab.training.ema")
    for path in sorted((PROJECT_ROOT / "glowlab" / "analysis").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if path.name == "loading.py" and node.module == "glowlab.training.module":
                    continue  # the deprecated load_trained shim only
                assert not any(n.startswith(banned) for n in names), f"{path.name} imports {node.module}"


def test_check_writable_names_the_option(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"pass out=DIR_OR_FILE"):
        check_writable(blocker / "sub" / "x.png", "out=")
    assert check_writable(tmp_path / "new" / "x.png", "out=") == tmp_path / "new" / "x.png"
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())  # the probe is gone


def test_grid_upscaling(tmp_path):
    """A grid narrower than min_width is written k times larger, pixel blocks exact, raw kept; a wide
    one (or min_width=0) is written once, as it is."""
    images = torch.rand(4, 3, 5, 5)
    info = save_grid(images, tmp_path / "g.png", nrow=2, min_width=100)
    assert info["raw_size"] == [13, 13] and info["scale"] == 8 and info["size"] == [104, 104]
    raw, big = read_png(tmp_path / "g_raw.png"), read_png(tmp_path / "g.png")
    assert big.shape[:2] == (104, 104) and (big == raw.repeat(8, 0).repeat(8, 1)).all()
    info = save_grid(images, tmp_path / "h.png", nrow=2, min_width=0)
    assert info["scale"] == 1 and info["raw_png"] is None and not (tmp_path / "h_raw.png").exists()
    assert torch.equal(upscale_nearest(torch.arange(4.0).view(2, 2), 2),
                       torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]))
    with pytest.raises(ValueError, match="nrow"):
        save_grid(images, tmp_path / "x.png", nrow=0)
