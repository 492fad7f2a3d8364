"""Attribute sources: class labels, CelebA's attribute file, a CSV for image_folder, pixel mass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glowlab.analysis.attributes import read_celeba_attributes, resolve_attribute
from glowlab.data import FlowDataModule


def _celeba_files(root, names=("Smiling", "Young")):
    """A fake CelebA attribute and partition file: 6 images, split ids 0 0 2 0 1 2."""
    folder = root / "celeba"
    folder.mkdir(parents=True)
    attrs = {"000001.jpg": (1, -1), "000002.jpg": (-1, -1), "000003.jpg": (1, 1), "000004.jpg": (1, 1),
             "000005.jpg": (-1, 1), "000006.jpg": (-1, 1)}
    rows = [f"{f}  " + "  ".join(f"{v:2d}" for v in vs) for f, vs in attrs.items()]
    lines = [str(len(attrs)), " ".join(names), *rows]
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    parts = dict(zip(attrs, (0, 0, 2, 0, 1, 2)))
    (folder / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in parts.items()))


class _Subset:
    """Stands for a data module's TransformedSubset: positions map to base ``indices``."""

    def __init__(self, indices):
        self.indices = torch.tensor(indices)


def test_celeba_attributes_follow_the_split_order(tmp_path):
    _celeba_files(tmp_path)
    names, train = read_celeba_attributes(tmp_path, "train")
    assert names == ["Smiling", "Young"] and train.tolist() == [[1, 0], [0, 0], [1, 1]]  # images 1, 2, 4
    assert read_celeba_attributes(tmp_path, "test")[1].tolist() == [[1, 1], [0, 1]]  # images 3, 6
    cfg = {"dataset": "celeba", "root": str(tmp_path)}
    smiling = resolve_attribute("Smiling", _Subset([2, 0]), cfg, "train", 0, 5)  # a train subset: images 4, 1
    x, y = torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)
    assert smiling(x, y, torch.tensor([0, 1])).tolist() == [1, 1]
    young = resolve_attribute("Young", _Subset([1, 2]), cfg, "train", 0, 5)  # images 2, 4
    assert young(x, y, torch.tensor([1, 0])).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"attribute='Smilling'.*Smiling, Young.*did you mean attribute=Smiling"):
        resolve_attribute("Smilling", None, cfg, "train", 0, 5)
    with pytest.raises(ValueError, match=r"dataset celeba has no class labels; use a per-image attribute \(CelebA"):
        resolve_attribute("class:1", None, cfg, "train", 0, 5)


def test_image_folder_csv(tmp_path):
    """The CSV's rows are matched by path relative to data.root, to the split folder, or by file name;
    images without a row are unknown (-1)."""
    for split, cls, name in [("train", "a", "1.png"), ("train", "a", "2.png"), ("train", "b", "3.png"),
                             ("train", "b", "4.png"), ("test", "a", "5.png"), ("test", "b", "6.png")]:
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), int(name[0]) * 30, np.uint8)).save(tmp_path / split / cls / name)
    (tmp_path / "attributes.csv").write_text("file,round,dark\ntrain/a/1.png,1,0\nb/3.png,-1,true\n4.png,1,\n"
                                             "test/b/6.png,0,1\n")
    dm = FlowDataModule(dataset="image_folder", root=str(tmp_path), n_bits=5, val_size=0)
    dm.setup("fit")
    dm.setup("test")
    cfg = {"dataset": "image_folder", "root": str(tmp_path)}
    train = dm.train_dataset
    x = torch.stack([train[i][0] for i in range(4)])
    y, pos = torch.tensor([train[i][1] for i in range(4)]), torch.arange(4)
    assert resolve_attribute("round", train, cfg, "train", 2, 5)(x, y, pos).tolist() == [1, -1, 0, 1]
    assert resolve_attribute("dark", train, cfg, "train", 2, 5)(x, y, pos).tolist() == [0, -1, 1, -1]
    assert resolve_attribute("class:1", train, cfg, "train", 2, 5)(x, y, pos).tolist() == [0, 0, 1, 1]
    test = dm.test_dataset
    xt = torch.stack([test[i][0] for i in range(2)])
    assert resolve_attribute("dark", test, cfg, "test", 2, 5)(xt, torch.tensor([0, 1]), torch.arange(2)).tolist() \
        == [-1, 1]
    with pytest.raises(ValueError, match=r"unknown attribute='shiny'.*class:0..class:1, mass:T.*round, dark"):
        resolve_attribute("shiny", train, cfg, "train", 2, 5)
    with pytest.raises(FileNotFoundError, match="attributes_csv=.*nope.csv"):
        resolve_attribute("round", train, cfg, "train", 2, 5, tmp_path / "nope.csv")


def test_class_and_mass_attributes():
    cfg = {"dataset": "digits", "root": "unused"}
    x = torch.tensor([0, 4, 8, 16], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    y = torch.tensor([7, 1, 7, 0])
    assert resolve_attribute("class:7", None, cfg, "train", 10, 5)(x, y, torch.arange(4)).tolist() == [1, 0, 1, 0]
    mass = resolve_attribute("mass:0.2", None, cfg, "train", 10, 5)  # values / 31 > 0.2: 8/31 and 16/31
    assert mass(x, y, torch.arange(4)).tolist() == [0, 0, 1, 1] and "/ 31 > 0.2" in mass.definition
    for bad, msg in [("class:10", "class:0 to class:9"), ("class:x", "class:0 to class:9"),
                     ("mass:2", "0 < T < 1"), ("mass", r"unknown attribute='mass'.*class:0..class:9, mass:T"),
                     ("Smiling", r"no CSV of attributes: unused/attributes.csv does not exist")]:
        with pytest.raises(ValueError, match=msg):
            resolve_attribute(bad, None, cfg, "train", 10, 5)
