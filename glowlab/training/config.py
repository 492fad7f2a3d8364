"""Hydra/OmegaConf helpers: resolvers, config printing and checkpoint reading."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from glowlab.training.checkpoint_checks import CheckpointError, check_initialized_flags, verify_checksum

__all__ = ["CONF_DIR", "PROJECT_ROOT", "CheckpointError", "apply_extras", "load_checkpoint", "register_resolvers"]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """``${glowlab.project_root:}`` (the repo root) and ``${glowlab.abspath:PATH}``."""
    if not OmegaConf.has_resolver("glowlab.project_root"):
        OmegaConf.register_new_resolver("glowlab.project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("glowlab.abspath"):
        OmegaConf.register_new_resolver("glowlab.abspath", lambda p: os.path.abspath(os.path.expanduser(str(p))))


register_resolvers()


def apply_extras(cfg: DictConfig) -> None:
    """Optional niceties before a run: silence harmless warnings, print the config tree."""
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    if extras.get("print_config"):
        from rich import print as rprint
        from rich.syntax import Syntax

        rprint(Syntax(OmegaConf.to_yaml(cfg, resolve=False), "yaml", theme="ansi_dark"))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a glowlab checkpoint on the CPU, with errors that name the file.

    Verifies the state dict's checksum (when the file has one,
    :mod:`glowlab.training.checkpoint_checks`) and that a trained model's ActNorm layers are flagged
    initialised.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated/corrupt, checksum mismatch, ActNorm flags off after training,
            or missing glowlab's model config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass ckpt_path=/abs/path/to/RUN/checkpoints/last.ckpt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for damaged files
        raise CheckpointError(
            f"could not read checkpoint {path} ({type(e).__name__}: {e}); the file is truncated or "
            f"not a PyTorch checkpoint. Use another one, e.g. last.ckpt or best.ckpt in the run's "
            f"checkpoints/ folder"
        ) from e
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "model_config" not in hp or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a glowlab checkpoint (no model_config in its hyper_parameters); "
            f"use a checkpoint written by `python train.py`"
        )
    verify_checksum(ckpt, path)
    check_initialized_flags(ckpt, path)
    return ckpt
