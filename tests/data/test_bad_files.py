"""Damaged or inconsistent dataset files get errors that name the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import write_png

from glowlab.data import DatasetNotFoundError, FlowDataModule, build_dataset


def test_truncated_png_names_the_file(image_folder):
    root, _ = image_folder
    bad = root / "train" / "dog" / "3.png"
    bad.write_bytes(bad.read_bytes()[:60])
    ds = build_dataset("image_folder", root, "train")
    index = [str(p) for p, _ in ds.base.samples].index(str(bad))
    with pytest.raises(OSError, match=r"could not read image .*dog/3\.png.*replace or delete"):
        ds[index]


def test_mixed_image_sizes_name_the_odd_file(image_folder, rng):
    """All 12x10 but one 16x16: the loader names that file and suggests data.image_size instead of
    failing in torch.stack."""
    root, _ = image_folder
    write_png(root / "train" / "cat" / "9.png", rng.integers(0, 256, size=(16, 16, 3)))
    dm = FlowDataModule("image_folder", root=str(root), n_bits=8, batch_size=4, val_size=0)
    dm.setup("fit")
    assert dm.image_shape == (3, 12, 10)
    with pytest.raises(ValueError, match=r"cat/9\.png came out as \(3, 16, 16\), not \(3, 12, 10\).*data.image_size"):
        for _ in dm.train_dataloader():
            pass
    dm = FlowDataModule("image_folder", root=str(root), n_bits=8, batch_size=4, val_size=0, image_size=8)
    dm.setup("fit")
    assert sum(len(x) for x, _ in dm.train_dataloader()) == 12  # 13 images, last partial batch dropped


def test_missing_mnist_idx_does_not_suggest_itself(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("mnist_idx", tmp_path / "none", "train")
    text = str(info.value)
    assert "data=digits" in text and "data=mnist_idx" not in text
    with pytest.raises(DatasetNotFoundError, match="data=mnist_idx"):
        build_dataset("image_folder", tmp_path / "none", "train")


def test_unreadable_image_in_a_flat_folder_names_it(tmp_path):
    write_png(tmp_path / "train" / "a.png", np.zeros((4, 4, 3)))
    (tmp_path / "train" / "b.png").write_bytes(b"\x89PNG not really")
    ds = build_dataset("image_folder", tmp_path, "train")
    with pytest.raises(OSError, match=r"train/b\.png"):
        ds[1]
