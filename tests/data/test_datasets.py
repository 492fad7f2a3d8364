"""build_dataset on real on-disk formats: values, layouts, splits, and the missing-data errors."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from data_helpers import MNIST_FIRST_LABELS, write_idx, write_png

from glowlab.data import DATASETS, DatasetNotFoundError, FlowDataModule, build_dataset, read_idx
from glowlab.data.datasets import native_shape


def test_registry_names():
    assert set(DATASETS) == {"cifar10", "mnist", "fashion_mnist", "svhn", "celeba", "image_folder",
                             "digits", "mnist_idx"}


def test_unknown_name_lists_valid_names(tmp_path):
    for make in (lambda: build_dataset("cifar100", tmp_path, "train"),
                 lambda: FlowDataModule("cifar100", root=str(tmp_path))):
        with pytest.raises(ValueError, match="cifar100") as info:
            make()
        assert all(name in str(info.value) for name in DATASETS)


def test_digits_split_and_values():
    from sklearn.datasets import load_digits

    train, test = build_dataset("digits", "unused", "train"), build_dataset("digits", "unused", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.source_bits == 5 and train.num_classes == 10
    ref = load_digits()
    np.testing.assert_array_equal(test.images[:, 0].numpy(), ref.images[-360:])
    np.testing.assert_array_equal(train.labels.numpy(), ref.target[:1437])
    x, y = train[0]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (1, 8, 8) and isinstance(y, int)
    assert int(train.images.max()) == 16 and int(train.images.min()) == 0


def test_mnist_idx_first_9000_last_1000(shared_mnist):
    train = build_dataset("mnist_idx", shared_mnist, "train", train_count=9000, test_count=1000)
    test = build_dataset("mnist_idx", shared_mnist, "test", train_count=9000, test_count=1000)
    assert (len(train), len(test)) == (9000, 1000)
    assert train.labels[:10].tolist() == MNIST_FIRST_LABELS
    full = torch.from_numpy(read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")).unsqueeze(1)
    assert torch.equal(test.images, full[9000:]) and torch.equal(train.images, full[:9000])
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (1, 28, 28)
    assert native_shape("mnist_idx", shared_mnist) == (1, 28, 28)


def test_mnist_idx_overlap_is_an_error(idx_pair):
    root, _, _ = idx_pair
    with pytest.raises(ValueError, match="overlap"):
        build_dataset("mnist_idx", root, "train", train_count=45, test_count=10)


def test_mnist_idx_two_file_mode(idx_pair, rng):
    root, images, _ = idx_pair
    train_images = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    write_idx(root / "train-images-idx3-ubyte.gz", train_images)
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(30))
    train = build_dataset("mnist_idx", root, "train")
    test = build_dataset("mnist_idx", root, "test", test_count=20)
    np.testing.assert_array_equal(train.images[:, 0].numpy(), train_images)
    np.testing.assert_array_equal(test.images[:, 0].numpy(), images[-20:])


def test_torchvision_mnist_layout(fake_mnist):
    root, arrays = fake_mnist
    for split, stem in (("train", "train"), ("test", "t10k")):
        ds = build_dataset("mnist", root, split)
        x, y = arrays[stem]
        assert len(ds) == len(x)
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), x)
        assert ds.labels.tolist() == y.tolist()


def test_torchvision_cifar_layout_is_chw(fake_cifar):
    root, batches = fake_cifar
    train, test = build_dataset("cifar10", root, "train"), build_dataset("cifar10", root, "test")
    assert (len(train), len(test)) == (20, 3)
    chw, labels = batches["test_batch"]
    np.testing.assert_array_equal(test.images.numpy(), chw)
    assert test.labels.tolist() == labels
    np.testing.assert_array_equal(train.images[4:8].numpy(), batches["data_batch_2"][0])


def test_image_folder_labelled(image_folder):
    root, pixels = image_folder
    train = build_dataset("image_folder", root, "train")
    assert len(train) == 12 and train.num_classes == 2
    x, y = train[7]  # dog/1.png
    assert (tuple(x.shape), y) == ((3, 12, 10), 1)
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), pixels["train"]["dog"][1])
    assert native_shape("image_folder", root) == (3, 12, 10)


def test_image_folder_val_fallback_and_flat(tmp_path, rng):
    a = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    for split in ("train", "val"):
        write_png(tmp_path / split / "img0.png", a)
        write_png(tmp_path / split / "img1.png", a[::-1])
    test = build_dataset("image_folder", tmp_path, "test")  # no test/: falls back to val/
    assert len(test) == 2 and test.num_classes == 0
    x, y = test[1]
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), a[::-1])
    assert y == 0


def test_image_folder_class_mismatch(image_folder):
    root, _ = image_folder
    (root / "test" / "dog").rename(root / "test" / "wolf")
    with pytest.raises(ValueError, match="labels would not match"):
        build_dataset("image_folder", root, "test")


@pytest.mark.parametrize("name", ["cifar10", "mnist", "fashion_mnist", "image_folder", "mnist_idx"])
def test_missing_dataset_names_root_and_remedy(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(name, root, "train", download=False)
    msg = str(info.value)
    assert str(root) in msg and repr(name) in msg and "data=digits" in msg
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, RuntimeError)
    if DATASETS[name].downloadable:
        assert "data.download=true" in msg


def test_download_failure_is_wrapped(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(self):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd.CIFAR10, "download", offline)
    root = tmp_path / "cifar10"
    dm = FlowDataModule("cifar10", root=str(root), download=True)
    with pytest.raises(DatasetNotFoundError, match="could not be downloaded") as info:
        dm.prepare_data()
    assert str(root) in str(info.value) and "name resolution" in str(info.value)
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_options_only_for_mnist_idx(tmp_path):
    with pytest.raises(ValueError, match="mnist_idx"):
        build_dataset("digits", tmp_path, "train", train_count=10)
    with pytest.raises(ValueError, match="mnist_idx"):
        FlowDataModule("digits", root=str(tmp_path), test_count=10)


def test_torchvision_svhn_layout(tmp_path, rng, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.SVHN, "_check_integrity", lambda self: True)  # not the real files
    hwcn = rng.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)  # SVHN's .mat stores X as H, W, C, N
    scipy_io.savemat(tmp_path / "test_32x32.mat", {"X": hwcn, "y": np.array([[10], [1], [2], [3], [4]])})
    ds = build_dataset("svhn", tmp_path, "test")
    np.testing.assert_array_equal(ds.images.numpy(), hwcn.transpose(3, 2, 0, 1))
    assert ds.labels.tolist() == [0, 1, 2, 3, 4]  # SVHN's label 10 is the digit 0
