"""Rebuild a trained model and its data from a checkpoint; shared by ``sample.py`` and ``score.py``."""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from glowlab.training.config import load_checkpoint
from glowlab.training.module import FlowModule

__all__ = ["load_trained", "inference_weights", "run_dir_of", "resolve_device", "write_json"]


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/None: CUDA when available, else the CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run directory of a checkpoint: ``RUN`` for ``RUN/checkpoints/x.ckpt``, else its folder."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def load_trained(ckpt_path: str | Path, data_overrides: dict | DictConfig | None = None,
                 device: str | torch.device | None = "cpu") -> tuple[FlowModule, DictConfig]:
    """Load ``(module, data_config)`` from a glowlab checkpoint.

    ``data_config`` is the checkpoint's FlowDataModule config with ``data_overrides`` merged on top
    (e.g. ``{"batch_size": 256}``); instantiate it with
    :func:`glowlab.training.run.build_datamodule`. The module is in eval mode on ``device``.
    Errors name the file (:func:`glowlab.training.config.load_checkpoint`).
    """
    ckpt = load_checkpoint(ckpt_path)
    stored = ckpt["hyper_parameters"].get("data_config")
    if not stored:
        raise ValueError(f"{ckpt_path} holds no data_config; it was not written by glowlab's train.py")
    data_config = OmegaConf.merge(OmegaConf.create(stored), data_overrides or {})
    module = FlowModule.load_from_checkpoint(str(ckpt_path), map_location="cpu")
    module.to(device if isinstance(device, torch.device) else resolve_device(device)).eval()
    return module, data_config


@contextmanager
def inference_weights(module: FlowModule):
    """Eval mode, no gradients and, when the module keeps an EMA, the averaged weights (the ones
    validation and sampling use during training)."""
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        if module.ema is not None:
            stack.enter_context(module.ema.swapped_in(module.model))
        was_training = module.model.training
        module.model.eval()
        try:
            yield module.model
        finally:
            module.model.train(was_training)


def write_json(path: str | Path, obj: dict) -> Path:
    """Write ``obj`` as indented JSON, creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path
