"""Datasets, ``n_bits`` preprocessing and the LightningDataModule.

``FlowDataModule`` serves ``(x, y)`` batches: ``x`` uint8 ``[B, C, H, W]`` holding integers in
``[0, 2**n_bits)``, ``y`` long ``[B]``. Dequantisation happens on the device, in the
LightningModule, with ``glowlab.likelihood.dequantize``.

Example:
    >>> from glowlab.data import FlowDataModule
    >>> dm = FlowDataModule("digits", root="unused", n_bits=5, batch_size=16)
    >>> dm.image_shape, dm.num_classes
    ((1, 8, 8), 10)
    >>> dm.setup("fit")
    >>> x, y = next(iter(dm.train_dataloader()))
    >>> x.dtype, tuple(x.shape), int(x.max()) < 2**5, y.dtype
    (torch.uint8, (16, 1, 8, 8), True, torch.int64)
"""

from glowlab.data.datamodule import FlowDataModule, TransformedSubset, split_train_val
from glowlab.data.datasets import DATASETS, DatasetInfo, build_dataset, native_shape
from glowlab.data.errors import DatasetNotFoundError
from glowlab.data.idx import IDXFormatError, read_idx
from glowlab.data.samplers import UnrepeatedDistributedSampler
from glowlab.data.transforms import ImageTransform, transformed_shape

__all__ = [
    "FlowDataModule", "build_dataset", "DATASETS", "DatasetInfo", "DatasetNotFoundError", "IDXFormatError",
    "ImageTransform", "TransformedSubset", "UnrepeatedDistributedSampler", "native_shape", "read_idx",
    "split_train_val", "transformed_shape",
]
