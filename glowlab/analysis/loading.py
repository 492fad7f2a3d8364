"""Checkpoint in, density and data module out: the one loader the after-training tools share.

:func:`load_model` rebuilds, from a glowlab checkpoint alone,

* the trained **density** (any glowlab model: ``log_prob``, ``sample``; multiscale models also
  ``model(x) -> (zs, logdet)`` and ``model.inverse(zs)``), in eval mode, with the exponential
  moving average of its weights when training kept one (the weights validation used),
* the learned **dequantiser** ``q(u | x)`` when the run trained one (``objective.dequantization``
  variational; None for uniform noise), which the bits/dim bound of the data includes, and
* its **data module**, from the data config stored in the checkpoint (with overrides merged on
  top), checked against the model's image shape.

It does not build the training wrapper (``FlowModule``), so ``sample.py`` and ``score.py`` depend
on the models, the data and the likelihood accounting only. Also here: the small file helpers the
tools share (:func:`check_writable` before any computation, :func:`write_json`).

Example:
    >>> trained = load_model("RUN/checkpoints/best.ckpt")                  # doctest: +SKIP
    >>> x = trained.model.sample(16, temperature=0.7)                      # doctest: +SKIP
    >>> test_set = trained.datamodule("test").test_dataset                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from glowlab.models.build import build_model
from glowlab.models.compat import legacy_model_config

__all__ = [
    "Trained",
    "check_writable",
    "inference_weights",
    "load_model",
    "load_trained",
    "resolve_device",
    "run_dir_of",
    "write_json",
]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None: CUDA when available, else the CPU; otherwise ``torch.device(device)``."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run directory of a checkpoint: ``RUN`` for ``RUN/checkpoints/x.ckpt``, else its folder."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


@dataclass
class Trained:
    """A trained density and the data it was trained on, as :func:`load_model` rebuilds them.

    Attributes:
        model: the density, in eval mode on its device.
        data_config: the data module's config (checkpoint's, overrides merged).
        n_bits: bits per pixel of the data (model space is ``x_int / 2**n_bits - 0.5 + noise``).
        eval_seed: seed of the deterministic evaluation dequantisation noise.
        ckpt_path: the checkpoint, absolute.
        ema: whether exponential-moving-average weights were loaded.
        dequantizer: the trained ``q(u | x_int)`` of variational dequantisation (a
            :class:`~glowlab.data.dequantization.VariationalDequantizer`, eval mode), or None when
            the run dequantised with uniform noise.
    """

    model: nn.Module
    data_config: DictConfig
    n_bits: int
    eval_seed: int
    ckpt_path: Path
    ema: bool = False
    dequantizer: nn.Module | None = None
    _datamodule: object = field(default=None, repr=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.model.image_shape)

    @property
    def num_dims(self) -> int:
        """``D = C * H * W``, the dimension count of bits/dim."""
        c, h, w = self.image_shape
        return c * h * w

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional model (its ``context`` is the label), else 0 (every
        :class:`~glowlab.core.Density` declares ``num_classes``)."""
        return int(self.model.num_classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def datamodule(self, stage: str | None = None):
        """The data module (built once, checked against the model's image shape), with the
        splits of ``stage`` (``"fit"``: train and val, ``"test"``) opened."""
        if self._datamodule is None:
            dm = instantiate(self.data_config)
            dm.check_model_compatible(self.image_shape)
            self._datamodule = dm
        if stage is not None:
            self._datamodule.setup(stage)
        return self._datamodule


def _load_ema(model: nn.Module, state: dict) -> bool:
    """Copy the averaged weights a training run kept (``ema.shadow_i`` buffers, one per floating
    parameter in ``named_parameters`` order, see :class:`glowlab.training.ema.EMA`) into ``model``."""
    if int(state.get("ema.num_updates", 0)) == 0:
        return False
    names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
    with torch.no_grad():
        for i, name in enumerate(names):
            model.get_parameter(name).copy_(state[f"ema.shadow_{i}"])
    return True


def load_model(ckpt_path: str | Path, data: dict | DictConfig | None = None, device: str | torch.device | None = "cpu",
               ema: bool = True) -> Trained:
    """Rebuild the trained density of a glowlab checkpoint, and its data config.

    Args:
        ckpt_path: a checkpoint written by ``train.py``.
        data: overrides of the stored data config, e.g. ``{"root": "/new/place", "batch_size": 256}``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        ema: load the moving-average weights when the run kept them (validation used those).
    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a readable glowlab checkpoint, damaged (checksum), without a data
            config, or with weights that do not fit its model config
            (:mod:`glowlab.training.checkpoint_checks`).
        ValueError: ``data`` changes ``n_bits``, ``image_size``, ``crop`` or ``pad_to`` (what the
            model was trained on: its bits/dim would not be comparable).
    """
    # the reading-side checks need neither Lightning nor the training module
    from glowlab.training.checkpoint_checks import check_data_overrides, explain_load_errors, stored_data_config
    from glowlab.training.config import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    hp = ckpt["hyper_parameters"]
    stored_data = stored_data_config(ckpt, ckpt_path)
    state = ckpt["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    # checkpoints of glowlab 0.1 are rebuilt as they were trained (glowlab.models.compat)
    config, _ = legacy_model_config(hp["model_config"], weights)
    config.pop("compile", None)
    model = build_model(config)
    with explain_load_errors(ckpt_path, ckpt):
        model.load_state_dict(weights)
    used_ema = ema and _load_ema(model, state)
    model.to(resolve_device(device)).eval()
    with explain_load_errors(ckpt_path, ckpt):
        dequantizer = _load_dequantizer(hp, state, model.image_shape[0])
    if dequantizer is not None:
        dequantizer.to(resolve_device(device)).eval()
    data_config = OmegaConf.merge(OmegaConf.create(stored_data), data or {})
    check_data_overrides(stored_data, data_config, ckpt_path)  # n_bits and geometry stay the model's
    return Trained(model, data_config, int(hp["n_bits"]), int(hp.get("eval_seed", 1234)),
                   Path(ckpt_path).resolve(), used_ema, dequantizer)


def _load_dequantizer(hp: dict, state: dict, in_channels: int) -> nn.Module | None:
    """The learned ``q(u | x)`` a run trained with its objective (``objective.dequantization``
    other than uniform; weights ``objective.dequantizer.*``), or None."""
    objective = hp.get("objective")
    config = objective.get("dequantization") if isinstance(objective, (dict, DictConfig)) else None
    prefix = "objective.dequantizer."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if config in (None, "uniform") or (isinstance(config, (dict, DictConfig)) and config.get("kind") == "uniform"):
        if weights:
            raise ValueError("the checkpoint holds a learned dequantiser's weights but no objective.dequantization "
                             "config to rebuild it from")
        return None
    from glowlab.data.dequantization import build_dequantizer

    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    dequantizer = build_dequantizer(config, in_channels, int(hp["n_bits"]))
    dequantizer.load_state_dict(weights)
    return dequantizer


def check_writable(path: str | Path, option: str) -> Path:
    """Make sure files can be written at ``path`` (a file to be written, or a folder when it ends
    with a separator or exists as one) before any computation: create the folder and a probe file
    in it. Raises ``PermissionError``/``OSError`` naming ``option`` (e.g. ``"out="``) otherwise."""
    path = Path(path)
    folder = path if path.is_dir() or str(path).endswith(os.sep) else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".glowlab_probe_"):
            pass
    except OSError as err:
        raise type(err)(f"cannot write to {folder} ({err.strerror or err}); pass {option}DIR_OR_FILE "
                        f"on a writable disk") from err
    return path


def write_json(path: str | Path, obj: dict) -> Path:
    """Write ``obj`` as indented JSON, creating the folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path


# -- deprecated: the LightningModule-based loader ------------------------------------------------
def load_trained(ckpt_path, data_overrides=None, device="cpu"):
    """Deprecated: ``(FlowModule, data_config)``; use :func:`load_model`, which needs no training code."""
    from glowlab.training.module import FlowModule

    warnings.warn("load_trained is deprecated; use glowlab.analysis.load_model", DeprecationWarning, stacklevel=2)
    trained = load_model(ckpt_path, data_overrides, device, ema=False)
    module = FlowModule.load_from_checkpoint(str(ckpt_path), map_location="cpu")
    return module.to(resolve_device(device)).eval(), trained.data_config


@contextmanager
def inference_weights(module):
    """Deprecated (with :func:`load_trained`): eval mode, no gradients and the EMA weights of a FlowModule."""
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
