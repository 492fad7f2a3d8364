"""Hydra entry points behind ``train.py``/``eval.py`` and the ``glowlab-*`` console scripts."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from glowlab.training.config import CONF_DIR

__all__ = ["eval_main", "train_main"]


NULLABLE_GROUPS = ("logger", "callbacks")


def allow_null_groups(argv: list[str]) -> list[str]:
    """``logger=null`` (or ``callbacks=null``) -> ``~logger``: Hydra cannot set a config group to
    null from the command line ("Config group override must be a string"), but can delete it."""
    return [f"~{a.split('=', 1)[0]}" if a in {f"{g}={v}" for g in NULLABLE_GROUPS for v in ("null", "none")} else a
            for a in argv]


def train_main() -> float | None:
    """``python train.py [overrides]``; see :func:`_train_hydra`."""
    sys.argv[1:] = allow_null_groups(sys.argv[1:])
    return _train_hydra()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _train_hydra(cfg: DictConfig) -> float | None:
    """Train; return the metric named by ``optimized_metric`` (default ``val/bpd``) for sweepers.
    In a multirun a failing job is recorded and returns ``inf``, so the sweep goes on
    (:func:`glowlab.training.sweeps.run_sweep_job`)."""
    from glowlab.training.run import train
    from glowlab.training.sweeps import is_multirun, run_sweep_job

    metric = cfg.get("optimized_metric") or "val/bpd"
    if is_multirun():
        return run_sweep_job(train, cfg, metric)
    metrics = train(cfg)
    return metrics.get(metric)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _eval_hydra(cfg: DictConfig) -> float | None:
    from glowlab.training.run import evaluate

    metrics = evaluate(cfg)
    return metrics.get(f"{cfg.get('split', 'test')}/bpd")


def allow_data_overrides(argv: list[str]) -> list[str]:
    """``data.KEY=VALUE`` -> ``++data.KEY=VALUE``: the data config comes from the checkpoint, so
    eval.yaml cannot declare its keys, and Hydra would otherwise reject them as unknown."""
    return [f"++{a}" if a.startswith("data.") else a for a in argv]


def eval_main() -> float | None:
    """Evaluate a checkpoint; return its bits/dim on the chosen split."""
    sys.argv[1:] = allow_data_overrides(sys.argv[1:])
    return _eval_hydra()
