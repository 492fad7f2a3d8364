"""conf/data/*.yaml: one per dataset, each instantiating FlowDataModule with its own argument names."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import SHARED_MNIST
from hydra.utils import instantiate
from omegaconf import OmegaConf

from glowlab.data import DATASETS, FlowDataModule

REPO = Path(__file__).resolve().parents[2]
EXPECTED_SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                   "svhn": (3, 32, 32), "celeba": (3, 64, 64), "image_folder": (3, 32, 32),
                   "digits": (1, 8, 8), "mnist_idx": (1, 28, 28)}


def load(name: str, data_dir: Path):
    """The data config under a ``paths`` node like conf/paths/default.yaml's (absolute paths)."""
    cfg = OmegaConf.create({
        "paths": {"data_dir": str(data_dir), "shared_dir": str((REPO.parent / "shared").resolve())},
        "data": OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml"),
    })
    return cfg.data


# mnist_idx reads its image shape from the IDX files in ../shared, which ship only beside the CI
# clone: without them the case skips (with the reason) instead of failing on a fresh clone.
NEEDS_SHARED = pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason=f"{SHARED_MNIST} is not present (MNIST IDX files beside the repo)")
CONFIG_CASES = [pytest.param(n, marks=NEEDS_SHARED) if n == "mnist_idx" else n for n in DATASETS]


@pytest.mark.parametrize("name", CONFIG_CASES)
def test_config_instantiates(name, tmp_path):
    cfg = load(name, tmp_path)
    assert cfg._target_ == "glowlab.data.FlowDataModule" and cfg.dataset == name
    dm = instantiate(cfg)
    assert isinstance(dm, FlowDataModule)
    assert dm.image_shape == EXPECTED_SHAPES[name]
    assert Path(dm.root).is_absolute()
    if name not in ("mnist_idx",):
        assert dm.root == str(tmp_path / name)


def test_mnist_idx_config_is_first_9000_last_1000(shared_mnist, tmp_path):
    dm = instantiate(load("mnist_idx", tmp_path))
    assert Path(dm.root) == shared_mnist.resolve()
    dm.setup(None)
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (8550, 450, 1000)


def test_digits_config_runs_offline(tmp_path):
    dm = instantiate(load("digits", tmp_path))
    dm.prepare_data()
    dm.setup(None)
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape) == (dm.batch_size, 1, 8, 8) and int(x.max()) < 32
