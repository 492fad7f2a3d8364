"""IDX parsing: the real MNIST test set, round trips, and corrupt files named in the error."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from data_helpers import MNIST_FIRST_LABELS, write_idx

from glowlab.data import FlowDataModule, IDXFormatError, read_idx
from glowlab.data.idx import load_idx_images, read_idx_shape


def test_real_mnist_test_set(shared_mnist):
    x = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz", ndim=3)
    y = read_idx(shared_mnist / "t10k-labels-idx1-ubyte.gz", ndim=1)
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y[:10].tolist() == MNIST_FIRST_LABELS
    assert x.max() == 255 and x.min() == 0
    assert read_idx_shape(shared_mnist / "t10k-images-idx3-ubyte.gz", ndim=3) == (10000, 28, 28)


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_round_trip_plain_and_gzip(tmp_path, rng, name):
    a = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    path = write_idx(tmp_path / name, a)
    np.testing.assert_array_equal(read_idx(path, ndim=3), a)
    assert read_idx_shape(path) == (5, 4, 3)


def test_load_pair_shapes(idx_pair):
    root, images, labels = idx_pair
    x, y = load_idx_images(root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz")
    assert tuple(x.shape) == (50, 1, 28, 28) and str(x.dtype) == "torch.uint8"
    np.testing.assert_array_equal(x[:, 0].numpy(), images)
    assert y.tolist() == labels.tolist()


def test_labels_file_read_as_images_names_file_and_magic(idx_pair):
    root, _, _ = idx_pair
    path = root / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(IDXFormatError, match="magic") as info:
        read_idx(path, ndim=3)
    assert str(path) in str(info.value) and "0x00000801" in str(info.value)


def test_garbage_file_names_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(IDXFormatError, match="magic") as info:
        read_idx(path, ndim=3)
    assert str(path) in str(info.value)


def test_truncated_payload_names_file(tmp_path, rng):
    path = write_idx(tmp_path / "x-idx3-ubyte.gz", rng.integers(0, 256, size=(10, 28, 28)))
    with gzip.open(path, "rb") as f:
        blob = f.read()
    with gzip.open(path, "wb") as f:
        f.write(blob[: 16 + 5 * 28 * 28])  # header claims 10 images, 5 follow
    with pytest.raises(IDXFormatError, match="truncated") as info:
        read_idx(path, ndim=3)
    assert str(path) in str(info.value)


def test_truncated_gzip_stream_names_file(tmp_path, rng):
    path = write_idx(tmp_path / "x-idx3-ubyte.gz", rng.integers(0, 256, size=(10, 28, 28)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(IDXFormatError) as info:
        read_idx(path, ndim=3)
    assert str(path) in str(info.value)


def test_image_and_label_counts_must_agree(tmp_path, rng):
    images = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, size=(4, 28, 28)))
    labels = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3))
    with pytest.raises(IDXFormatError, match="4 images.*3 labels"):
        load_idx_images(images, labels)


def test_datamodule_reports_corrupt_file(idx_pair):
    root, _, _ = idx_pair
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-300])
    dm = FlowDataModule("mnist_idx", root=str(root), n_bits=8, train_count=40, test_count=10)
    with pytest.raises(IDXFormatError) as info:
        dm.setup("fit")
    assert str(path) in str(info.value)
