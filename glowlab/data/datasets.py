"""The dataset registry and :func:`build_dataset`: name + root + split -> raw images.

Every dataset yields ``(uint8 [C, H, W], int label)`` at its stored bit depth (8 bits, or 5 for
``digits``); :class:`~glowlab.data.transforms.ImageTransform` does resizing and ``n_bits``.

=============  ============  =======  ==========================================================
name           (C, H, W)     classes  splits (train: before the val hold-out; test: test metrics)
=============  ============  =======  ==========================================================
cifar10        3, 32, 32     10       train 50,000 / test 10,000 (torchvision CIFAR10)
mnist          1, 28, 28     10       train 60,000 / test 10,000 (torchvision MNIST)
fashion_mnist  1, 28, 28     10       train 60,000 / test 10,000 (torchvision FashionMNIST)
svhn           3, 32, 32     10       train 73,257 / test 26,032 (torchvision SVHN; no "extra")
celeba         3, 218, 178   0        train 162,770 / test 19,962 (torchvision CelebA, aligned)
image_folder   3, from file  folders  ``root/train`` / ``root/test`` (else ``root/val``)
digits         1, 8, 8       10       scikit-learn's 1,797: first 1,437 / last 360 (5-bit)
mnist_idx      1, from file  10       IDX files in ``root``, see :mod:`glowlab.data.offline`
=============  ============  =======  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from glowlab.data import offline
from glowlab.data.errors import missing_dataset
from glowlab.data.sources import FlatImageFolder, PILImages, TensorImages, list_images

__all__ = ["DatasetInfo", "DATASETS", "build_dataset", "check_dataset_name", "native_shape", "dataset_num_classes"]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before opening it.

    ``shape`` is the stored ``(C, H, W)``, or None when it is read from the files;
    ``num_classes`` is None when it depends on the files (image_folder); ``source_bits`` is the
    bit depth of the stored values; ``layout`` is the file layout expected under ``root``.
    """

    shape: tuple[int, int, int] | None
    num_classes: int | None
    source_bits: int
    downloadable: bool
    layout: str


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo((3, 32, 32), 10, 8, True,
                           "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"),
    "mnist": DatasetInfo((1, 28, 28), 10, 8, True, "ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "fashion_mnist": DatasetInfo((1, 28, 28), 10, 8, True,
                                 "ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "svhn": DatasetInfo((3, 32, 32), 10, 8, True, "ROOT/train_32x32.mat and ROOT/test_32x32.mat"),
    "celeba": DatasetInfo(
        (3, 218, 178), 0, 8, True,
        "ROOT/celeba/img_align_celeba/*.jpg plus ROOT/celeba/{list_eval_partition,list_attr_celeba,"
        "identity_CelebA,list_bbox_celeba,list_landmarks_align_celeba}.txt (torchvision's CelebA layout; "
        "its Google Drive download often hits a quota, then fetch the files by hand)"),
    "image_folder": DatasetInfo(
        None, None, 8, False,
        "ROOT/train/<class>/*.png and ROOT/test/<class>/*.png (ROOT/val/ when there is no ROOT/test), "
        "or the images directly in ROOT/train and ROOT/test for unlabelled data"),
    "digits": DatasetInfo((1, 8, 8), 10, 5, False, "nothing: bundled with scikit-learn"),
    "mnist_idx": DatasetInfo(None, 10, 8, False, offline.IDX_LAYOUT),
}


def check_dataset_name(name: str) -> DatasetInfo:
    """The registry entry for ``name``; ValueError listing the valid names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def build_dataset(name: str, root: str | Path, split: str, download: bool = False, **options) -> Dataset:
    """Open one split of a dataset.

    Args:
        name: a key of :data:`DATASETS`.
        root: the dataset's folder (see ``DATASETS[name].layout``).
        split: ``"train"`` or ``"test"``.
        download: let torchvision download missing files into ``root`` (call it with True on one
            process only, then open with False everywhere).
        options: for ``mnist_idx`` only: ``idx_file``, ``train_count``, ``test_count``.
    Returns:
        A dataset of ``(uint8 [C, H, W], int label)`` with attributes ``num_classes`` and
        ``source_bits``.
    Raises:
        ValueError: unknown name, split or option.
        DatasetNotFoundError: the files are not in ``root`` (or the download failed).
    """
    info = check_dataset_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if options and name != "mnist_idx":
        raise ValueError(f"options {sorted(options)} apply only to dataset=mnist_idx, not {name!r}")
    root = Path(root).expanduser().resolve()
    if name == "digits":
        return offline.digits(split)
    if name == "mnist_idx":
        return offline.mnist_idx(root, split, **options)
    if name == "image_folder":
        return _image_folder(root, split)
    return _torchvision(name, root, split, download, info)


def _torchvision(name: str, root: Path, split: str, download: bool, info: DatasetInfo) -> Dataset:
    import torchvision.datasets as tvd

    train = split == "train"
    openers = {
        "cifar10": lambda: tvd.CIFAR10(str(root), train=train, download=download),
        "mnist": lambda: tvd.MNIST(str(root), train=train, download=download),
        "fashion_mnist": lambda: tvd.FashionMNIST(str(root), train=train, download=download),
        "svhn": lambda: tvd.SVHN(str(root), split=split, download=download),
        "celeba": lambda: tvd.CelebA(str(root), split=split, target_type=[], download=download),
    }
    try:
        ds = openers[name]()
    except (RuntimeError, OSError) as err:  # torchvision's "not found or corrupted"; URLError is an OSError
        raise missing_dataset(name, str(root), str(err), info.layout, download_failed=download) from err
    if name == "cifar10":
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        return TensorImages(images, torch.as_tensor(ds.targets), 10)
    if name in ("mnist", "fashion_mnist"):
        return TensorImages(ds.data.unsqueeze(1).contiguous(), ds.targets, 10)
    if name == "svhn":
        return TensorImages(torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels), 10)
    return PILImages(ds, num_classes=0, labelled=False)


def _image_folder_split(root: Path, split: str) -> Path:
    layout = DATASETS["image_folder"].layout
    names = ("train",) if split == "train" else ("test", "val")
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise missing_dataset("image_folder", str(root), f"no {' or '.join(names)} folder there", layout,
                          downloadable=False)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def _image_folder(root: Path, split: str) -> Dataset:
    from torchvision.datasets import ImageFolder

    folder = _image_folder_split(root, split)
    classes = _class_dirs(folder)
    if split != "train" and (root / "train").is_dir() and classes != _class_dirs(root / "train"):
        raise ValueError(
            f"the class folders of {folder} ({classes}) differ from those of {root / 'train'} "
            f"({_class_dirs(root / 'train')}); labels would not match"
        )
    try:
        if classes:
            return PILImages(ImageFolder(str(folder)), num_classes=len(classes))
        return PILImages(FlatImageFolder(folder), num_classes=0, labelled=False)
    except FileNotFoundError as err:
        raise missing_dataset("image_folder", str(root), str(err), DATASETS["image_folder"].layout,
                              downloadable=False) from err


def _first_image(folder: Path) -> Path:
    for sub in [folder] + [folder / c for c in _class_dirs(folder)]:
        files = list_images(sub)
        if files:
            return files[0]
    raise FileNotFoundError(f"no image files in {folder} or its subfolders")


def native_shape(name: str, root: str | Path, **options) -> tuple[int, int, int]:
    """The stored ``(C, H, W)`` of a dataset's images, opening at most one file's header.

    ``image_folder`` reads the size of the first training image (always 3 channels: images are
    converted to RGB); ``mnist_idx`` reads the IDX header.
    """
    info = check_dataset_name(name)
    if info.shape is not None:
        return info.shape
    root = Path(root).expanduser().resolve()
    if name == "mnist_idx":
        return offline.mnist_idx_shape(root, **options)
    folder = _image_folder_split(root, "train")
    try:
        first = _first_image(folder)
    except FileNotFoundError as err:
        raise missing_dataset(name, str(root), str(err), info.layout, downloadable=False) from err
    with Image.open(first) as img:
        w, h = img.size
    return 3, h, w


def dataset_num_classes(name: str, root: str | Path) -> int:
    """Number of classes (0 when unlabelled); ``image_folder`` counts the class folders of ``root/train``."""
    info = check_dataset_name(name)
    if info.num_classes is not None:
        return info.num_classes
    return len(_class_dirs(_image_folder_split(Path(root).expanduser().resolve(), "train")))
