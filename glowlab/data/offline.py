"""The two datasets that need no download: scikit-learn's digits and MNIST IDX files on disk.

**digits.** ``sklearn.datasets.load_digits``: 1,797 grey 8x8 images with values 0..16 (each is
the count of set pixels in a 4x4 block of a 32x32 bitmap), labels 0..9. The values already fit in
5 bits, so the images are used as 5-bit data as they are (``n_bits`` must be 5). Split, in the
bundled order: train = the first 1,437 images, test = the last 360 (about 20%).

**mnist_idx.** MNIST's original IDX files read straight from ``root`` (``/work/shared/data/mnist``
holds the real 10,000-image test set; torchvision's MNIST class will not open it because the
training files are missing). Two modes:

* *one file* (``idx_file="t10k"``, the default when ``root`` has no training files): train = the
  first ``train_count`` images, test = the last ``test_count`` (default 1,000); they must not
  overlap. With 10,000 images and 9,000 / 1,000, train on 0..8999 and test on 9000..9999.
* *two files* (``root`` also holds ``train-images-idx3-ubyte[.gz]`` and ``idx_file`` is None):
  train comes from the training file, test from ``t10k``, the counts optionally keeping the
  first ``train_count`` / last ``test_count`` of each.
"""

from __future__ import annotations

from pathlib import Path

import torch

from glowlab.data.errors import missing_dataset
from glowlab.data.idx import find_idx_file, load_idx_images, read_idx_shape
from glowlab.data.sources import TensorImages

__all__ = ["digits", "mnist_idx", "mnist_idx_shape", "DIGITS_TEST_COUNT", "IDX_TEST_COUNT", "IDX_LAYOUT"]

DIGITS_TEST_COUNT = 360
IDX_TEST_COUNT = 1000
IDX_LAYOUT = ("ROOT/t10k-images-idx3-ubyte.gz and ROOT/t10k-labels-idx1-ubyte.gz (also without .gz), "
              "optionally ROOT/train-images-idx3-ubyte.gz and ROOT/train-labels-idx1-ubyte.gz")


def digits(split: str) -> TensorImages:
    """scikit-learn's digits as uint8 ``[N, 1, 8, 8]`` with values 0..16 (5-bit data); train N=1437, test N=360."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype("uint8")).unsqueeze(1)
    y = torch.from_numpy(d.target.astype("int64"))
    full = TensorImages(x, y, num_classes=10, source_bits=5)
    n_train = len(full) - DIGITS_TEST_COUNT
    return full.subset(0, n_train) if split == "train" else full.subset(n_train, len(full))


def _files(root: Path, stem: str) -> tuple[Path, Path]:
    images = find_idx_file(root, f"{stem}-images-idx3-ubyte")
    labels = find_idx_file(root, f"{stem}-labels-idx1-ubyte")
    if images is None or labels is None:
        missing = [n for n, p in ((f"{stem}-images-idx3-ubyte[.gz]", images),
                                  (f"{stem}-labels-idx1-ubyte[.gz]", labels)) if p is None]
        raise missing_dataset("mnist_idx", str(root), f"no {' or '.join(missing)} there", IDX_LAYOUT,
                              downloadable=False)
    return images, labels


def _plan(root: Path, idx_file: str | None) -> tuple[str, str]:
    """The file stems ``(train, test)`` to read; equal stems mean one-file mode."""
    if idx_file is None:
        if find_idx_file(root, "train-images-idx3-ubyte") is not None:
            return "train", "t10k"
        idx_file = "t10k"
    if not isinstance(idx_file, str) or not idx_file:
        raise ValueError(f"idx_file must be a file stem such as 't10k' or 'train', got {idx_file!r}")
    return idx_file, idx_file


def _check_count(name: str, value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def mnist_idx(root: str | Path, split: str, idx_file: str | None = None, train_count: int | None = None,
              test_count: int | None = None) -> TensorImages:
    """One split of MNIST-style IDX files in ``root``: uint8 ``[N, 1, 28, 28]`` (8-bit), labels 0..9.

    Args:
        root: the folder holding the ``.gz`` (or uncompressed) IDX files.
        split: ``"train"`` or ``"test"``.
        idx_file: the stem to split in one-file mode (``"t10k"`` or ``"train"``), or None (see module doc).
        train_count: train = the first ``train_count`` images (one-file default: all but the test ones).
        test_count: test = the last ``test_count`` images (one-file default: 1,000).
    Raises:
        DatasetNotFoundError: the files are missing. IDXFormatError: a file is corrupt.
        ValueError: in one-file mode, ``train_count + test_count`` exceeds the images in the file.
    """
    root = Path(root)
    train_count, test_count = _check_count("train_count", train_count), _check_count("test_count", test_count)
    train_stem, test_stem = _plan(root, idx_file)
    stem = train_stem if split == "train" else test_stem
    x, y = load_idx_images(*_files(root, stem))
    n = len(x)
    if train_stem == test_stem:
        test_count = IDX_TEST_COUNT if test_count is None else test_count
        train_count = n - test_count if train_count is None else train_count
        if train_count + test_count > n:
            raise ValueError(
                f"mnist_idx: train_count={train_count} + test_count={test_count} exceeds the {n} images "
                f"in {stem}; train (the first ones) and test (the last ones) would overlap"
            )
    full = TensorImages(x, y, num_classes=10)
    if split == "train":
        return full.subset(0, n if train_count is None else min(train_count, n))
    return full.subset(0 if test_count is None else max(n - test_count, 0), n)


def mnist_idx_shape(root: str | Path, idx_file: str | None = None, **_counts) -> tuple[int, int, int]:
    """``(1, H, W)`` from the header of the training images file."""
    root = Path(root)
    images, _ = _files(root, _plan(root, idx_file)[0])
    _, h, w = read_idx_shape(images, ndim=3)
    return 1, h, w
