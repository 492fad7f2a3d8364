"""Map-style datasets of raw images: ``(uint8 [C, H, W] at the source's bit depth, int label)``.

Two containers cover every dataset:

* :class:`TensorImages` holds the whole split in memory (CIFAR-10, MNIST, SVHN, digits, IDX files).
* :class:`PILImages` wraps a torchvision dataset that yields PIL images (CelebA, ImageFolder) and
  converts each one to an RGB uint8 tensor on access.

Both are picklable, so they work with ``num_workers > 0`` and ``ddp_spawn``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as TF

__all__ = ["FlatImageFolder", "PILImages", "TensorImages", "list_images"]


class TensorImages(Dataset):
    """Images held in memory.

    Args:
        images: uint8 ``[N, C, H, W]``.
        labels: long ``[N]`` (zeros for unlabelled data).
        num_classes: number of classes, 0 when unlabelled.
        source_bits: bits of the stored pixel values (8, or 5 for scikit-learn digits).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, source_bits: int = 8):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape [{len(images)}], got {tuple(labels.shape)}")
        self.images, self.labels = images, labels.long()
        self.num_classes, self.source_bits = num_classes, source_bits

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, start: int, stop: int) -> TensorImages:
        """Images ``start`` to ``stop`` (Python slice semantics) as a new dataset (a view)."""
        return TensorImages(self.images[start:stop], self.labels[start:stop], self.num_classes, self.source_bits)


class PILImages(Dataset):
    """A torchvision dataset yielding ``(PIL image, target)``, returned as ``(uint8 [3, H, W], label)``.

    ``labelled=False`` replaces every target with 0 (CelebA's attributes are not used).
    """

    def __init__(self, base: Dataset, num_classes: int, labelled: bool = True):
        self.base, self.num_classes, self.labelled = base, num_classes, labelled
        self.source_bits = 8

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            img, target = self.base[i]
            x = TF.pil_to_tensor(img if img.mode == "RGB" else img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as err:  # PIL: truncated, corrupt or not an image
            raise OSError(f"could not read image {self.describe(i)} ({type(err).__name__}: {err}); "
                          f"replace or delete that file") from err
        return x, int(target) if self.labelled else 0

    def describe(self, i: int) -> str:
        """The file behind item ``i`` when the wrapped dataset knows it, else ``"item i"``."""
        samples = getattr(self.base, "samples", None) or getattr(self.base, "files", None)  # ImageFolder, flat
        if samples is None and hasattr(self.base, "filename"):  # CelebA
            return str(Path(self.base.root) / self.base.base_folder / "img_align_celeba" / self.base.filename[i])
        if samples is None:
            return f"item {i}"
        entry = samples[i]
        return str(entry[0] if isinstance(entry, tuple) else entry)


def list_images(folder: Path) -> list[Path]:
    """Image files (torchvision's ``IMG_EXTENSIONS``) directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))


class FlatImageFolder(Dataset):
    """Unlabelled images directly inside one folder (no class subfolders); yields ``(PIL RGB, 0)``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.files = list_images(self.folder)
        if not self.files:
            raise FileNotFoundError(f"no image files ({', '.join(IMG_EXTENSIONS)}) in {self.folder}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as img:
            return img.convert("RGB"), 0
