"""Checkpoint files that are never half-written and whose weights can be verified.

:class:`AtomicCheckpointIO` is the Lightning ``CheckpointIO`` plugin behind every checkpoint of a
run (``conf/trainer/default.yaml`` sets it in ``trainer.plugins``). For a local path it

* writes the file atomically in the destination folder (:func:`glowlab.atomic.atomic_write`:
  a temporary file beside it, ``fsync``, ``os.replace``), so a full disk, a kill or a second
  filesystem (``hydra.run.dir`` on shared storage) leaves the previous checkpoint intact;
* stores a SHA-256 checksum of the model's state dict
  (:func:`glowlab.training.checkpoint_checks.state_dict_checksum`) and the glowlab version in the
  checkpoint, which :func:`glowlab.training.config.load_checkpoint` verifies.

Remote URLs (``s3://...``) fall back to Lightning's own writer, still with the checksum. The
checks applied when reading live in :mod:`glowlab.training.checkpoint_checks` (no Lightning).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO

import glowlab
from glowlab.atomic import atomic_write
from glowlab.training.checkpoint_checks import CHECKSUM_KEY, VERSION_KEY, state_dict_checksum

__all__ = ["CHECKSUM_KEY", "VERSION_KEY", "AtomicCheckpointIO", "state_dict_checksum"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the destination, ``fsync``, ``os.replace``;
    adds :data:`CHECKSUM_KEY` and :data:`VERSION_KEY` to every checkpoint it writes."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if isinstance(checkpoint.get("state_dict"), dict):
            checkpoint[CHECKSUM_KEY] = state_dict_checksum(checkpoint["state_dict"])
            checkpoint[VERSION_KEY] = glowlab.__version__
        if not _is_local(path):
            return super().save_checkpoint(checkpoint, path)
        atomic_write(os.fspath(path), lambda f: torch.save(checkpoint, f))


def _is_local(path) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(get_filesystem(os.fspath(path)), LocalFileSystem)
