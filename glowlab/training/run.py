"""What `train.py` and `eval.py` do: seed, instantiate, fit, test, return the metrics."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from glowlab.training.config import apply_extras, load_checkpoint
from glowlab.training.module import FlowModule, build_objective

__all__ = ["train", "evaluate", "instantiate_group", "build_datamodule"]

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers)."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def build_datamodule(data_config, image_shape) -> pl.LightningDataModule:
    """Instantiate the data module and check that its images fit a model of ``image_shape``."""
    datamodule = instantiate(data_config)
    datamodule.check_model_compatible(tuple(int(v) for v in image_shape))
    return datamodule


def _finish_wandb() -> None:
    """Close the wandb run, so each job of a multirun sweep gets its own."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        wandb.finish()


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}


def _write_metrics(trainer: pl.Trainer, output_dir: str | None, metrics: dict) -> None:
    if trainer.is_global_zero and output_dir:
        path = Path(output_dir) / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True))


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (``cfg.train``) and test (``cfg.test``) the configured model; return scalar metrics.

    The test uses the best checkpoint by ``val/bpd`` when one was written, else the final weights.
    Metrics are also written to ``<output_dir>/metrics.json`` (rank 0 only).
    """
    apply_extras(cfg)
    start = time.time()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        load_checkpoint(ckpt_path)  # fail early, naming the file, if it is damaged
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    objective_config = OmegaConf.to_container(cfg.objective, resolve=True) if cfg.get("objective") else None
    # a run without data (reverse KL) gets its data module from the objective
    datamodule = build_objective(objective_config).datamodule() or build_datamodule(
        cfg.data, model_config.get("image_shape") or model_config.get("event_shape"))
    module = FlowModule(model_config=model_config, n_bits=datamodule.n_bits, objective=objective_config,
                        data_config=OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None,
                        **OmegaConf.to_container(cfg.get("module") or OmegaConf.create({}), resolve=True))
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = _scalars(trainer.callback_metrics)
        # the checkpoint that monitors a metric (val/bpd), not the one that keeps the latest state
        best_cb = next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
        if cfg.get("test", True):
            best = best_cb.best_model_path if best_cb else ""
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(_scalars(trainer.callback_metrics))
        if best_cb is not None:
            metrics["best/val_bpd"] = float(best_cb.best_model_score or float("nan"))
    finally:
        _finish_wandb()
    metrics["wall_time_s"] = time.time() - start
    _write_metrics(trainer, cfg.get("paths", {}).get("output_dir"), metrics)
    log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Bits/dim of a checkpoint on the test (or val) split of its own dataset.

    The data and model configs come from the checkpoint; ``cfg.data`` holds overrides on top.
    """
    apply_extras(cfg)
    ckpt = load_checkpoint(cfg.ckpt_path)
    hp = ckpt["hyper_parameters"]
    data_config = OmegaConf.merge(OmegaConf.create(hp["data_config"]), cfg.get("data") or {})
    datamodule = build_datamodule(data_config, hp["model_config"]["image_shape"])
    module = FlowModule.load_from_checkpoint(cfg.ckpt_path, map_location="cpu")
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")))
    split = cfg.get("split", "test")
    if split == "test":
        trainer.test(module, datamodule=datamodule)
    elif split == "val":
        trainer.validate(module, datamodule=datamodule)
    else:
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    metrics = _scalars(trainer.callback_metrics)
    metrics["global_step"] = float(ckpt.get("global_step", 0))
    _write_metrics(trainer, cfg.get("paths", {}).get("output_dir"), metrics)
    log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
    return metrics
