"""Hydra entry points of ``sample.py`` and ``score.py`` (console scripts ``glowlab-sample`` and
``glowlab-score``)."""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from glowlab.training.config import CONF_DIR, apply_extras

__all__ = ["sample_main", "score_main"]


def _container(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node else {}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sample")
def _sample(cfg: DictConfig) -> dict:
    from glowlab.analysis.sampling import sample_to_file

    apply_extras(cfg)
    info = sample_to_file(cfg.ckpt_path, mode=cfg.mode, n=cfg.n, temperature=cfg.temperature,
                          temperatures=list(cfg.temperatures), nrow=cfg.nrow, pairs=cfg.pairs, steps=cfg.steps,
                          seed=cfg.seed, out=cfg.out, device=cfg.device, data=_container(cfg.get("data")),
                          min_width=cfg.min_width)
    bad = f"; {info['non_finite']} of {info['num_images']} samples were NaN/inf (drawn black)" if info["non_finite"] else ""
    print(f"wrote {info['png']} ({info['rows']} x {info['nrow']} images){bad}")
    return info


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="score")
def _score(cfg: DictConfig) -> dict:
    from glowlab.analysis.scoring import score_checkpoint

    apply_extras(cfg)
    s = score_checkpoint(cfg.ckpt_path, ood_data=cfg.ood_data, k=cfg.k, limit=cfg.limit,
                         train_limit=cfg.train_limit, batch_size=cfg.batch_size, seed=cfg.seed, out=cfg.out,
                         device=cfg.device, data=_container(cfg.get("data")), ood=_container(cfg.get("ood")),
                         paths=cfg.paths)
    keys = ("test_bpd_mean", "ood_bpd_mean", "train_bpd_mean", "auroc_bpd", "auroc_typicality", "non_finite")
    print(json.dumps({k: s[k] for k in keys}, indent=2))
    print(f"wrote {s['csv']} and {s['histogram']}")
    return s


def _allow_new_keys(argv: list[str], groups: tuple[str, ...]) -> list[str]:
    """``data.KEY=V`` -> ``++data.KEY=V`` (and for ``ood.``): these dicts are empty in the yaml,
    since their keys come from the checkpoint, so Hydra would reject them as unknown."""
    return [f"++{a}" if a.startswith(tuple(f"{g}." for g in groups)) else a for a in argv]


def sample_main() -> dict:
    """``python sample.py ckpt_path=... [mode=...]`` (see conf/sample.yaml)."""
    sys.argv[1:] = _allow_new_keys(sys.argv[1:], ("data",))
    return _sample()


def score_main() -> dict:
    """``python score.py ckpt_path=... [ood_data=...]`` (see conf/score.yaml)."""
    sys.argv[1:] = _allow_new_keys(sys.argv[1:], ("data", "ood"))
    return _score()
