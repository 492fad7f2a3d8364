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


def _edit(cfg: DictConfig) -> dict:
    """``mode=directions`` / ``mode=manipulate``: print what the issue asks to report."""
    from glowlab.analysis.editing import compute_directions, manipulate_to_file

    attribute = cfg.get("attribute")
    attribute = list(attribute) if OmegaConf.is_list(attribute) else attribute
    common = dict(batch_size=cfg.batch_size, device=cfg.device, data=_container(cfg.get("data")),
                  attributes_csv=cfg.get("attributes_csv"))
    if cfg.mode == "directions":
        info = compute_directions(cfg.ckpt_path, attribute, limit=cfg.limit, directions=cfg.get("directions"), **common)
        for name, e in info["attributes"].items():
            norms = ", ".join(f"{v:.3f}" for v in e["norms"])
            print(f"{name}: {e['count_with']} images with, {e['count_without']} without ({e['unknown']} unknown); "
                  f"direction norm per level (finest first): [{norms}]")
        print(f"wrote {info['path']} and {info['json']}")
        return info
    levels = cfg.get("levels")
    levels = list(levels) if OmegaConf.is_list(levels) else levels
    info = manipulate_to_file(cfg.ckpt_path, attribute, levels=levels, rows=cfg.rows, alpha_steps=cfg.alpha_steps,
                              seed=cfg.seed, out=cfg.out, directions=cfg.get("directions"), limit=cfg.limit,
                              min_width=cfg.min_width, **common)
    print(f"{attribute}: {info['count_with']} with, {info['count_without']} without; direction norm per level "
          f"[{', '.join(f'{v:.3f}' for v in info['norms'])}]; levels edited {info['levels']}")
    print(f"wrote {info['png']} ({info['rows']} test images x alphas {[round(a, 3) for a in info['alphas']]}); "
          f"reconstruction at alpha=0: max abs error {info['reconstruction_max_abs_error']:.2e}, "
          f"{info['reconstruction_pixels_changed']} pixels changed")
    return info


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sample")
def _sample(cfg: DictConfig) -> dict:
    from glowlab.analysis.editing import EDIT_MODES
    from glowlab.analysis.sampling import MODES, sample_to_file

    apply_extras(cfg)
    if cfg.mode in EDIT_MODES:
        return _edit(cfg)
    if cfg.mode not in MODES:
        raise ValueError(f"mode= must be one of {MODES + EDIT_MODES}, got mode={cfg.mode!r}")
    info = sample_to_file(cfg.ckpt_path, mode=cfg.mode, n=cfg.n, temperature=cfg.temperature,
                          temperatures=list(cfg.temperatures), nrow=cfg.nrow, pairs=cfg.pairs, steps=cfg.steps,
                          seed=cfg.seed, out=cfg.out, device=cfg.device, data=_container(cfg.get("data")),
                          min_width=cfg.min_width)
    bad = f"; {info['non_finite']} of {info['num_images']} samples were NaN/inf (drawn black)"
    bad = bad if info["non_finite"] else ""
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
