"""What `train.py` and `eval.py` do: seed, instantiate, fit, test, return the metrics."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from glowlab.atomic import atomic_write_text
from glowlab.training.checkpoint_checks import (
    check_data_overrides,
    check_resume_model_config,
    explain_load_errors,
    stored_data_config,
)
from glowlab.training.config import apply_extras, load_checkpoint
from glowlab.training.module import FlowModule, build_objective
from glowlab.training.precision import warn_if_slow_bf16

__all__ = ["build_datamodule", "evaluate", "importance_weighted_bpd", "instantiate_group", "train"]

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
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}


def _write_metrics(trainer: pl.Trainer, output_dir: str | None, metrics: dict) -> None:
    if trainer.is_global_zero and output_dir:
        atomic_write_text(Path(output_dir) / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))


def _require_finite(metrics: dict, key: str, what: str) -> None:
    """A non-finite bits/dim is a failure (non-zero exit), not a result: raise after it is written."""
    value = metrics.get(key)
    if value is not None and not math.isfinite(value):
        raise FloatingPointError(
            f"{key} is {value}: {what} gave a non-finite bits/dim (metrics.json has it). The weights hold NaN "
            f"or inf, or some image gets probability 0; check the checkpoint and the data overrides"
        )


def _explain_model_error(err: Exception, model_config: dict) -> Exception:
    """A bad argument raised while the LightningModule builds the model, restated with the model
    config it came from (``model.KEY=VALUE ...``); other errors are returned unchanged."""
    frames, tb = set(), err.__traceback__
    while tb is not None:
        frames.add(tb.tb_frame.f_code)
        tb = tb.tb_next
    if FlowModule.__init__.__code__ not in frames:
        return err
    settings = " ".join(f"model.{k}={v}" for k, v in model_config.items() if k != "_target_")
    try:
        return type(err)(f"{err} (while building {model_config.get('_target_')} from the model config: {settings})")
    except Exception:  # noqa: BLE001 - an exception type with another signature: keep the original
        return err


def _own_checkpoint(trainer: pl.Trainer, best_cb) -> str | None:
    """This run's best checkpoint, else its latest one, else None (the weights in memory).

    A run resumed into a new directory inherits the old run's ``best_model_path`` from the
    checkpoint: that file is not this run's (and may have moved), so it is never used.
    """
    def mine(cb, path) -> bool:
        return (bool(path) and cb.dirpath is not None and Path(path).is_file()
                and Path(path).resolve().parent == Path(cb.dirpath).resolve())

    if best_cb is not None and mine(best_cb, best_cb.best_model_path):
        return best_cb.best_model_path
    for cb in trainer.checkpoint_callbacks:
        if cb is not best_cb and mine(cb, cb.best_model_path):
            return cb.best_model_path
    return None


def _model_errors_explained(fn):
    """Decorator: :func:`_explain_model_error` for the errors escaping ``fn(cfg)``."""
    @functools.wraps(fn)
    def run(cfg: DictConfig) -> dict[str, float]:
        try:
            return fn(cfg)
        except (ValueError, TypeError) as err:
            explained = _explain_model_error(err, OmegaConf.to_container(cfg.model, resolve=True))
            if explained is err:
                raise
            raise explained from err
    return run


@_model_errors_explained
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
    resumed = load_checkpoint(ckpt_path) if ckpt_path else None  # fail early, naming the file, if it is damaged
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    if resumed is not None:
        check_resume_model_config(resumed, model_config, ckpt_path)
    if cfg.get("data") and cfg.data.get("root"):  # stored absolute, so eval.py works from any folder
        with open_dict(cfg):
            cfg.data.root = os.path.abspath(os.path.expanduser(str(cfg.data.root)))
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
    warn_if_slow_bf16(trainer)
    try:
        if cfg.get("train", True):
            with explain_load_errors(ckpt_path, resumed) if ckpt_path else nullcontext():
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = _scalars(trainer.callback_metrics)
        # the checkpoint that monitors a metric (val/bpd), not the one that keeps the latest state
        best_cb = next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
        if cfg.get("test", True):
            own = _own_checkpoint(trainer, best_cb) if cfg.get("train", True) else None
            log.info("testing %s", own or "the weights in memory (this run saved no checkpoint)")
            trainer.test(module, datamodule=datamodule, ckpt_path=own)
            metrics.update(_scalars(trainer.callback_metrics))
        if best_cb is not None:
            # keyed on what the run monitors: best/val_bpd, or e.g. best/val_free_energy for reverse KL
            metrics["best/" + best_cb.monitor.replace("/", "_")] = float(best_cb.best_model_score or float("nan"))
    finally:
        _finish_wandb()
    metrics["wall_time_s"] = time.time() - start
    _write_metrics(trainer, cfg.get("paths", {}).get("output_dir"), metrics)
    log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
    _require_finite(metrics, "test/bpd", "the test of the trained model")
    return metrics


def importance_weighted_bpd(ckpt_path: str, split: str, k: int, data=None) -> dict[str, float]:
    """``{<split>/bpd_k<k>, <split>/bpd_k<k>_stderr}``: the mean over images of the per-image
    bits/dim of ``log (1/k) sum_j p(x + u_j) / q(u_j | x)`` (:func:`glowlab.analysis.scoring.image_bpd`;
    uniform draws have ``q = 1``). Each image's value is a tighter upper bound on its discrete
    -log2 P(x) per dimension as ``k`` grows (Burda et al. 2016; Ho et al. 2019, section 3.1);
    ``k = 1`` reproduces ``<split>/bpd`` to float rounding."""
    from glowlab.analysis.loading import load_model
    from glowlab.analysis.scoring import image_bpd

    trained = load_model(ckpt_path, data)
    dm = trained.datamodule("fit" if split == "val" else "test")
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    bpd, _ = image_bpd(trained, loader, k)
    return {f"{split}/bpd_k{k}": float(bpd.mean()),
            f"{split}/bpd_k{k}_stderr": float(bpd.std() / max(len(bpd), 1) ** 0.5)}


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Bits/dim of a checkpoint on the test (or val) split of its own dataset.

    The data and model configs come from the checkpoint; ``cfg.data`` holds overrides on top.
    ``cfg.k > 1`` adds ``<split>/bpd_k<k>`` (and its standard error): the bound tightened by ``k``
    dequantisation draws per image, see :func:`importance_weighted_bpd`.
    """
    apply_extras(cfg)
    k = cfg.get("k", 1)  # checked before the test pass, so a typo costs nothing
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (dequantisation draws per image) must be a positive integer, got {k!r}; "
                         f"e.g. k=16, or k=1 for the plain bound")
    ckpt = load_checkpoint(cfg.ckpt_path)
    hp = ckpt["hyper_parameters"]
    stored = stored_data_config(ckpt, cfg.ckpt_path)
    data_config = OmegaConf.merge(OmegaConf.create(stored), cfg.get("data") or {})
    check_data_overrides(stored, data_config, cfg.ckpt_path)
    datamodule = build_datamodule(data_config, hp["model_config"]["image_shape"])
    with explain_load_errors(cfg.ckpt_path, ckpt):
        module = FlowModule.load_from_checkpoint(cfg.ckpt_path, map_location="cpu")
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")))
    warn_if_slow_bf16(trainer)
    split = cfg.get("split", "test")
    if split == "test":
        trainer.test(module, datamodule=datamodule)
    elif split == "val":
        trainer.validate(module, datamodule=datamodule)
    else:
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    metrics = _scalars(trainer.callback_metrics)
    metrics["global_step"] = float(ckpt.get("global_step", 0))
    if k > 1:
        metrics.update(importance_weighted_bpd(cfg.ckpt_path, split, k, cfg.get("data")))
    _write_metrics(trainer, cfg.get("paths", {}).get("output_dir"), metrics)
    log.info("metrics: %s", json.dumps(metrics, sort_keys=True))
    _require_finite(metrics, f"{split}/bpd", f"evaluating {cfg.ckpt_path}")
    return metrics
