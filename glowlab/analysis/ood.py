"""Out-of-distribution image sets for ``score.py``: built-in transforms of the test set, or
another configured dataset preprocessed like the model's own.

Built-in sets (work offline), each the size of the test set and in its ``n_bits`` integers:

* ``noise``: uniform random integer images, ``x ~ U{0, ..., 2**n_bits - 1}`` per pixel.
* ``inverted``: ``2**n_bits - 1 - x``.
* ``shuffled_pixels``: each image's pixel positions permuted at random (channels move together),
  which keeps the pixel histogram and destroys the structure.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from glowlab.data.datasets import DATASETS
from glowlab.training.config import CONF_DIR

__all__ = ["TRANSFORMS", "build_ood_datamodule", "check_ood_name", "check_ood_shape", "ood_data_config",
           "transform_batch"]

TRANSFORMS = ("noise", "inverted", "shuffled_pixels")
# keys of a data config that say where a dataset lives, taken from conf/data/<name>.yaml
_LOCATION_KEYS = ("dataset", "root", "download", "idx_file", "train_count", "test_count")
_IDX_ONLY = ("idx_file", "train_count", "test_count")


def transform_batch(name: str, x_int: Tensor, n_bits: int, generator: torch.Generator) -> Tensor:
    """Apply the built-in OOD transform ``name`` to integer images ``[B, C, H, W]`` (uint8,
    values in ``[0, 2**n_bits)``); returns the same shape and dtype. ``generator`` (CPU) drives
    the randomness of ``noise`` and ``shuffled_pixels``."""
    top = 2**n_bits - 1
    if name == "noise":
        return torch.randint(0, top + 1, x_int.shape, generator=generator).to(x_int.dtype)
    if name == "inverted":
        return (top - x_int.long()).to(x_int.dtype)
    if name == "shuffled_pixels":
        b, c, h, w = x_int.shape
        perm = torch.rand(b, h * w, generator=generator).argsort(dim=1)
        flat = x_int.flatten(2)
        return torch.gather(flat, 2, perm[:, None, :].expand(b, c, h * w)).view_as(x_int)
    raise ValueError(f"unknown OOD transform {name!r}; built-in ones: {TRANSFORMS}")


def check_ood_name(name: str) -> None:
    """ValueError listing every valid ``ood_data=`` (built-in transforms and dataset names), with the
    closest one, unless ``name`` is one of them."""
    if name in TRANSFORMS or name in DATASETS:
        return
    valid = list(TRANSFORMS) + list(DATASETS)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f"; did you mean ood_data={close[0]}?" if close else ""
    raise ValueError(f"unknown ood_data={name!r}: use a built-in transform of the test set "
                     f"({', '.join(TRANSFORMS)}) or a dataset ({', '.join(DATASETS)}){hint}")


def ood_data_config(data_config: DictConfig, name: str, paths: DictConfig | dict | None = None,
                    overrides: DictConfig | dict | None = None) -> DictConfig:
    """The data config of dataset ``name`` as an OOD set for a model trained on ``data_config``.

    The preprocessing (``n_bits``, ``crop``, ``image_size``, ``pad_to``, batch sizes) is the
    model's; where the dataset lives (``root``, ``download``, the IDX options) comes from
    ``conf/data/<name>.yaml`` when it exists (interpolations resolved against ``paths``, by
    default ``conf/paths/default.yaml``), else
    ``root`` is ``<data_config.root>/../<name>``. ``overrides`` are merged last, e.g.
    ``{"image_size": 8}`` to resize MNIST for an 8x8 model.
    """
    check_ood_name(name)
    cfg = OmegaConf.create(OmegaConf.to_container(data_config, resolve=True))
    for key in _IDX_ONLY:
        cfg.pop(key, None)
    cfg.dataset = name
    cfg.root = str(Path(str(data_config.get("root", "data"))).parent / name)
    own_file = CONF_DIR / "data" / f"{name}.yaml"
    if own_file.is_file():
        paths = paths if paths is not None else OmegaConf.load(CONF_DIR / "paths" / "default.yaml")
        node = OmegaConf.create({"paths": paths, "data": OmegaConf.load(own_file)})
        own = OmegaConf.to_container(node.data, resolve=True)
        cfg = OmegaConf.merge(cfg, {k: own[k] for k in _LOCATION_KEYS if k in own})
    return OmegaConf.merge(cfg, overrides or {})


def check_ood_shape(datamodule, model_shape, name: str) -> None:
    """Raise ValueError naming both shapes when the OOD images do not fit the model."""
    have, want = tuple(datamodule.image_shape), tuple(int(v) for v in model_shape)
    if have != want:
        hint = f"ood.image_size={want[1]}" if have[0] == want[0] else "a dataset with the same number of channels"
        raise ValueError(f"OOD dataset {name} gives images of shape {have}, but the model expects {want}; "
                         f"use {hint} (preprocessing applied to the OOD set only)")


def build_ood_datamodule(data_config: DictConfig, name: str, model_shape, paths=None, overrides=None):
    """Instantiate, download if allowed, and open the test split of OOD dataset ``name``."""
    dm = instantiate(ood_data_config(data_config, name, paths, overrides))
    check_ood_shape(dm, model_shape, name)
    dm.prepare_data()
    dm.setup("test")
    return dm
