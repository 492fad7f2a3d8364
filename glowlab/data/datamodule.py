"""``FlowDataModule``: integer images for flow training, with exact evaluation under DDP.

A batch is ``(x, y)``: ``x`` uint8 ``[B, C, H, W]`` with values in ``[0, 2**n_bits)`` and ``y``
long ``[B]`` (zeros when unlabelled). Dequantisation is *not* done here: the LightningModule
calls ``glowlab.likelihood.dequantize`` on the device.

Splits: ``train`` minus a held-out ``val`` (``val_size``, drawn with ``seed``) for fitting, and the
dataset's test split for ``test``. Only ``prepare_data`` (run by Lightning on local rank 0)
downloads; ``setup`` opens the files with ``download=False`` on every rank.

Distributed: when the attached trainer (or ``torch.distributed``) has world size R > 1, the
loaders carry their own samplers: a :class:`~glowlab.data.samplers.ResumableShuffleSampler`
(DistributedSampler's shuffle, seeded with ``seed`` and the epoch, also with one process) for
train, an :class:`~glowlab.data.samplers.UnrepeatedDistributedSampler` for val and test, so each
evaluation image is seen exactly once over all ranks. Both are DistributedSampler subclasses, so
Lightning leaves them alone whatever ``Trainer(use_distributed_sampler=...)`` is set to.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from glowlab.data.datasets import DATASETS, build_dataset, check_dataset_name, dataset_num_classes, native_shape
from glowlab.data.samplers import ResumableDataLoader, ResumableShuffleSampler, UnrepeatedDistributedSampler
from glowlab.data.transforms import ImageTransform, transformed_shape

__all__ = ["FlowDataModule", "TransformedSubset", "split_train_val"]


class TransformedSubset(Dataset):
    """Items ``indices`` of ``base`` with ``transform`` applied to each image; yields ``(uint8 [C, H, W], int)``.

    With ``shape`` set, every transformed image is checked against it, and one of another size
    raises a ValueError naming its file (``base.describe(i)``) instead of failing later in the
    batch collation.
    """

    def __init__(self, base: Dataset, indices: torch.Tensor, transform: ImageTransform,
                 shape: tuple[int, int, int] | None = None):
        self.base, self.indices, self.transform, self.shape = base, indices, transform, shape

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        x, y = self.base[j]
        x = self.transform(x)
        if self.shape is not None and tuple(x.shape) != self.shape:
            where = self.base.describe(j) if hasattr(self.base, "describe") else f"item {j}"
            raise ValueError(f"image {where} came out as {tuple(x.shape)}, not {self.shape} like the "
                             f"first one: the images differ in size; set data.image_size (e.g. "
                             f"data.image_size={self.shape[-1]}) to resize them all")
        return x, y


def split_train_val(n: int, val_size: float | int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into sorted ``(train, val)`` index tensors, val drawn at random with ``seed``.

    ``val_size`` is a fraction in ``[0, 1)`` (float, rounded to a count) or a count (int).
    The same ``(n, val_size, seed)`` always gives the same split, on every machine and rank.
    """
    _check_val_size(val_size)
    n_val = round(val_size * n) if isinstance(val_size, float) else val_size
    if not 0 <= n_val < n:
        raise ValueError(f"val_size={val_size!r} leaves no training images out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _check_val_size(val_size) -> None:
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ValueError(f"val_size must be a fraction in [0, 1) (float) or a count (int), got {val_size!r}")
    if isinstance(val_size, float) and not 0.0 <= val_size < 1.0:
        raise ValueError(f"val_size as a fraction must lie in [0, 1), got {val_size}")
    if isinstance(val_size, int) and val_size < 0:
        raise ValueError(f"val_size as a count must be >= 0, got {val_size}")


def _positive(name: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return value


class FlowDataModule(pl.LightningDataModule):
    """Images as ``n_bits`` integers for normalizing flows.

    Args:
        dataset: a name in :data:`glowlab.data.DATASETS`.
        root: the dataset's folder (made absolute); for ``mnist_idx`` the folder with the IDX files.
        n_bits: bits per pixel the model sees, 1..8 (must be 5 for ``digits``, which is 5-bit data).
        image_size: resize the shorter side to this, then center crop to a square.
        pad_to: zero-pad to ``pad_to x pad_to`` (e.g. MNIST 28 -> 32). The padding counts in
            bits/dim, so that bpd is not comparable with the unpadded one.
        crop: center crop to ``crop x crop`` before resizing (CelebA: 148, then image_size=64).
        hflip: random horizontal flips, on the train split only.
        val_size: fraction (float) or count (int) of the train split held out for validation.
        batch_size, eval_batch_size: per process; eval defaults to ``batch_size``.
        num_workers, pin_memory: DataLoader settings.
        download: let ``prepare_data`` download missing files (torchvision datasets only).
        seed: seeds the train/val split and the distributed train shuffling.
        train_limit, test_limit: keep only the first N images of the train (before the val
            split) and test splits, for quick runs.
        idx_file, train_count, test_count: ``mnist_idx`` only, see :mod:`glowlab.data.offline`.

    ``image_shape`` ``(C, H, W)`` and ``num_classes`` are known after ``__init__``: from constants
    for the named datasets, from one file's header for ``image_folder`` (unless ``image_size`` is
    set) and ``mnist_idx``, read on first access.
    """

    def __init__(self, dataset: str = "digits", root: str = "data", n_bits: int = 5,
                 image_size: int | None = None, pad_to: int | None = None, hflip: bool = False,
                 val_size: float | int = 0.05, batch_size: int = 64, eval_batch_size: int | None = None,
                 num_workers: int = 0, download: bool = True, seed: int = 0, train_limit: int | None = None,
                 test_limit: int | None = None, crop: int | None = None, idx_file: str | None = None,
                 train_count: int | None = None, test_count: int | None = None, pin_memory: bool = False):
        super().__init__()
        info = check_dataset_name(dataset)
        if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
            raise ValueError(f"n_bits must be an integer from 1 to 8, got {n_bits!r}")
        if info.source_bits != 8 and n_bits != info.source_bits:
            raise ValueError(
                f"dataset {dataset} is {info.source_bits}-bit data (values 0..16 for digits) and is used "
                f"as it is; set data.n_bits={info.source_bits} (got {n_bits})"
            )
        self.options = {k: v for k, v in (("idx_file", idx_file), ("train_count", train_count),
                                          ("test_count", test_count)) if v is not None}
        if self.options and dataset != "mnist_idx":
            raise ValueError(f"{sorted(self.options)} apply only to dataset=mnist_idx, not {dataset!r}")
        _positive("batch_size", batch_size, allow_none=False)
        for name, value in (("eval_batch_size", eval_batch_size), ("train_limit", train_limit),
                            ("test_limit", test_limit)):
            _positive(name, value)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        _check_val_size(val_size)
        self.save_hyperparameters(logger=False)
        self.dataset, self.root, self.n_bits = dataset, str(Path(root).expanduser().resolve()), n_bits
        self.image_size, self.pad_to, self.crop, self.hflip = image_size, pad_to, crop, bool(hflip)
        self.val_size, self.seed, self.download = val_size, seed, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.train_limit, self.test_limit = train_limit, test_limit
        self.train_dataset = self.val_dataset = self.test_dataset = None
        self._transform_args = dict(n_bits=n_bits, source_bits=info.source_bits, crop=crop,
                                    image_size=image_size, pad_to=pad_to)
        ImageTransform(**self._transform_args)  # validates the sizes now
        self._image_shape = None
        if info.shape is not None:
            self._image_shape = transformed_shape(info.shape, crop, image_size, pad_to)
        elif dataset == "image_folder" and image_size is not None and crop is None:
            self._image_shape = transformed_shape((3, image_size, image_size), None, None, pad_to)
        self._num_classes = info.num_classes

    # ---- what the model needs to know before it is built -------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of a batch's images after the transforms (may read one file header)."""
        if self._image_shape is None:
            shape = native_shape(self.dataset, self.root, **self.options)
            self._image_shape = transformed_shape(shape, self.crop, self.image_size, self.pad_to)
        return self._image_shape

    @property
    def num_classes(self) -> int:
        """Number of classes; 0 when unlabelled (then ``y`` is all zeros)."""
        if self._num_classes is None:
            self._num_classes = dataset_num_classes(self.dataset, self.root)
        return self._num_classes

    @property
    def num_dims(self) -> int:
        """``D = C * H * W``, the dimension count in bits/dim."""
        c, h, w = self.image_shape
        return c * h * w

    def describe(self) -> str:
        """What a bits/dim on this data is a number of, e.g. ``"mnist (1, 32, 32) padded from 28x28, 5-bit"``."""
        parts = [f"{self.dataset} {self.image_shape}"]
        if self.crop:
            parts.append(f"center-cropped to {self.crop}")
        if self.image_size:
            parts.append(f"resized to {self.image_size}")
        if self.pad_to:
            parts.append(f"zero-padded to {self.pad_to}")
        return ", ".join(parts) + f", {self.n_bits}-bit"

    def check_model_compatible(self, image_shape) -> None:
        """Raise ValueError unless a model built for ``image_shape`` ``(C, H, W)`` fits this data."""
        want, have = tuple(int(v) for v in image_shape), self.image_shape
        if want == have:
            return
        fix = f"set model.image_shape={list(have)} to match the data"
        if want[0] != have[0]:
            fix += f" (the data has {have[0]} channel(s) and no data option changes that)"
        elif want[1] == want[2]:
            fix += f", or resize the images with data.image_size={want[1]}"
            if want[1] >= max(have[1:]):
                fix += f", or zero-pad them with data.pad_to={want[1]} (the bpd is then not comparable to unpadded)"
        raise ValueError(f"dataset {self.dataset} gives images {have} but the model expects {want}; {fix}")

    # ---- Lightning hooks ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download the dataset (local rank 0 only, as Lightning calls it) if ``download`` is set."""
        if self.download and DATASETS[self.dataset].downloadable:
            for split in ("train", "test"):
                build_dataset(self.dataset, self.root, split, download=True, **self.options)

    def setup(self, stage: str | None = None) -> None:
        """Open the splits ``stage`` needs (``fit``/``validate``: train and val; ``test``/``predict``: test)."""
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            base = build_dataset(self.dataset, self.root, "train", **self.options)
            n = len(base) if self.train_limit is None else min(self.train_limit, len(base))
            train_idx, val_idx = split_train_val(n, self.val_size, self.seed)
            if self.val_size and not len(val_idx):
                rank_zero_warn(f"data.val_size={self.val_size} of {n} training images holds out none: there is no "
                               f"validation, so best.ckpt is not written and best/val_bpd is NaN. Use more "
                               f"images (data.train_limit) or a count, e.g. data.val_size=1")
            shape = self.image_shape
            self.train_dataset = TransformedSubset(base, train_idx, self._transform(hflip=self.hflip), shape)
            self.val_dataset = TransformedSubset(base, val_idx, self._transform(), shape)
            self._check_shape(self.train_dataset)
        if stage in (None, "test", "predict") and self.test_dataset is None:
            base = build_dataset(self.dataset, self.root, "test", **self.options)
            n = len(base) if self.test_limit is None else min(self.test_limit, len(base))
            self.test_dataset = TransformedSubset(base, torch.arange(n), self._transform(), self.image_shape)
            self._check_shape(self.test_dataset)
        sizes = {k: len(getattr(self, f"{k}_dataset")) for k in ("train", "val", "test")
                 if getattr(self, f"{k}_dataset") is not None}
        rank_zero_info(f"data: {self.describe()}; " + ", ".join(f"{k} {v}" for k, v in sizes.items()))

    def _transform(self, hflip: bool = False) -> ImageTransform:
        return ImageTransform(**self._transform_args, hflip=hflip)

    @staticmethod
    def _check_shape(ds: Dataset) -> None:
        """Open the first image now, so a wrong size fails at setup (later ones fail when loaded)."""
        if len(ds):
            ds[0]

    def _world(self) -> tuple[int, int]:
        """``(world_size, global_rank)`` from the attached trainer, else torch.distributed, else (1, 0)."""
        if self.trainer is not None:
            return self.trainer.world_size, self.trainer.global_rank
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _loader(self, ds: Dataset, batch_size: int, sampler=None, drop_last: bool = False,
                cls: type[DataLoader] = DataLoader) -> DataLoader:
        return cls(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=self.num_workers,
                   pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled by ``(seed, epoch)`` (split over the ranks under DDP); drops the last partial
        batch (unless there is only one). Its position is saved in checkpoints, so a run resumed
        mid-epoch sees the rest of that epoch's batches in order (:class:`ResumableDataLoader`)."""
        self._require(self.train_dataset, "fit")
        world, rank = self._world()
        sampler = ResumableShuffleSampler(self.train_dataset, num_replicas=world, rank=rank, seed=self.seed)
        loader = self._loader(self.train_dataset, self.batch_size, sampler, drop_last=len(sampler) >= self.batch_size,
                              cls=ResumableDataLoader)
        if self.trainer is not None:
            loader.progress = self._train_progress
        return loader

    def _train_progress(self) -> tuple[int, float]:
        """``(batches trained in the current epoch, batches per epoch)`` from the attached trainer."""
        trainer = self.trainer
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed, trainer.num_training_batches

    def val_dataloader(self):
        """In order, every image once over all ranks; ``[]`` (no validation) when ``val_size`` is 0."""
        self._require(self.val_dataset, "fit")
        return self._eval_loader(self.val_dataset) if len(self.val_dataset) else []

    def test_dataloader(self) -> DataLoader:
        """In order, every test image once over all ranks."""
        self._require(self.test_dataset, "test")
        return self._eval_loader(self.test_dataset)

    def _eval_loader(self, ds: Dataset) -> DataLoader:
        world, rank = self._world()
        sampler = UnrepeatedDistributedSampler(ds, num_replicas=world, rank=rank) if world > 1 else None
        return self._loader(ds, self.eval_batch_size, sampler)

    @staticmethod
    def _require(ds, stage: str) -> None:
        if ds is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for this dataloader")
