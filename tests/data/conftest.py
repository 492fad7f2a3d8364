"""Fixtures that write real on-disk dataset formats into ``tmp_path`` (writers in data_helpers.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from data_helpers import SHARED_MNIST, write_idx, write_png


@pytest.fixture
def shared_mnist() -> Path:
    """The real MNIST test set in ../shared/data/mnist."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{SHARED_MNIST} is not present")
    return SHARED_MNIST


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def idx_pair(tmp_path, rng):
    """``(root, images, labels)``: ``t10k-*`` files with 50 random 28x28 images and labels 0..9."""
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = np.arange(50, dtype=np.uint8) % 10
    root = tmp_path / "idx"
    write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    return root, images, labels


@pytest.fixture
def fake_mnist(tmp_path, rng):
    """torchvision's MNIST layout (``root/MNIST/raw/*-ubyte``, uncompressed): 12 train and 6 test images."""
    root = tmp_path / "mnist"
    arrays = {}
    for stem, n in (("train", 12), ("t10k", 6)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(root / "MNIST" / "raw" / f"{stem}-images-idx3-ubyte", x)
        write_idx(root / "MNIST" / "raw" / f"{stem}-labels-idx1-ubyte", y)
        arrays[stem] = (x, y)
    return root, arrays


@pytest.fixture
def fake_cifar(tmp_path, rng, monkeypatch):
    """torchvision's CIFAR-10 python layout with 5 x 4 train and 3 test images.

    Each batch is a pickled dict with ``data`` uint8 ``[n, 3072]`` (rows in C, H, W order) and
    ``labels``. torchvision's md5 checks are patched out, as the files are not the real ones.
    """
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    root = tmp_path / "cifar10"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        batches[name] = (data.reshape(n, 3, 32, 32), labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return root, batches


@pytest.fixture
def image_folder(tmp_path, rng):
    """``root/{train,test}/{cat,dog}/k.png``: 6 train and 2 test images per class, 12x10 (H x W) RGB.

    Returns ``(root, pixels)`` with ``pixels[split][class]`` a list of ``[H, W, 3]`` arrays in file order.
    """
    root = tmp_path / "folder"
    pixels = {}
    for split, n in (("train", 6), ("test", 2)):
        pixels[split] = {}
        for cls in ("cat", "dog"):
            arrays = [rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8) for _ in range(n)]
            for k, a in enumerate(arrays):
                write_png(root / split / cls / f"{k}.png", a)
            pixels[split][cls] = arrays
    return root, pixels


@pytest.fixture
def fake_celeba(tmp_path, rng, monkeypatch):
    """torchvision's CelebA layout with 7 aligned 178x218 JPEGs: 3 train, 2 valid (unused), 2 test.

    The md5 checks are patched out, as the annotation files are not the real ones.
    """
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.CelebA, "_check_integrity", lambda self: True)
    root = tmp_path / "celeba"
    folder = root / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, 8)]
    for name in names:
        write_png(folder / "img_align_celeba" / name, rng.integers(0, 256, size=(218, 178, 3)))
    rows = lambda values: "".join(f"{n} {v}\n" for n, v in zip(names, values))  # noqa: E731
    (folder / "list_eval_partition.txt").write_text(rows([0, 0, 0, 1, 1, 2, 2]))
    (folder / "identity_CelebA.txt").write_text(rows([7] * 7))
    (folder / "list_bbox_celeba.txt").write_text("7\nimage_id x_1 y_1 width height\n" + rows(["1 2 3 4"] * 7))
    (folder / "list_landmarks_align_celeba.txt").write_text("7\nlefteye_x lefteye_y\n" + rows(["1 2"] * 7))
    (folder / "list_attr_celeba.txt").write_text("7\nSmiling Young\n" + rows(["1 -1"] * 7))
    return root
