"""Likelihood scores of images for out-of-distribution (OOD) detection: ``score.py``.

Per image, bits/dim under the model (:func:`image_bpd`). Two anomaly scores are compared against
an OOD set by their AUROC (OOD is the positive class, 1.0 = perfect separation, 0.5 = chance):

* ``bpd``: a higher bpd is more anomalous.
* ``typicality``: ``|bpd - mean train bpd|``, a one-sample version of the typicality test of
  Nalisnick et al. (2019), "Detecting out-of-distribution inputs to deep generative models using
  typicality", the remedy for OOD sets a flow finds *more* likely than its training data
  (Nalisnick et al. 2019, "Do deep generative models know what they don't know?").

Dequantisation: draw ``j`` uses the deterministic per-image noise of seed ``eval_seed + j`` (the
checkpoint's ``eval_seed``), so with ``k = 1`` the numbers equal ``eval.py``'s. With ``k > 1`` the
score is ``-log2(mean_j P_j) / D`` where ``P_j = 2**(-n D) p(x~_j)``: an importance-weighted
(log-mean-exp) bound on ``-log2 P(x_int) / D``, tighter than one draw and than the mean over draws.

A checkpoint trained with variational dequantisation (Flow++) is scored with its learned
``q(u | x)``: draw ``j`` is ``u_j ~ q(u | x_int)`` (from the same per-image noise, so ``k = 1``
again equals eval.py's ``test/bpd``) and ``P_j = 2**(-n D) p(x~_j) / q(u_j | x_int)``, the
importance weight of :func:`glowlab.likelihood.importance_weighted_bits_per_dim`.

Class-conditional models are scored by their marginal ``p(x) = mean_c p(x | c)`` (uniform class
prior), since OOD images have no class; their in-distribution bpd is then not eval.py's
``p(x | y)``.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from glowlab.analysis.loading import Trained, load_model, run_dir_of, write_json
from glowlab.analysis.ood import TRANSFORMS, build_ood_datamodule, check_ood_name, transform_batch
from glowlab.likelihood import bits_per_dim, dequantize, hashed_uniform

__all__ = ["image_bpd", "log_mean_exp_bpd", "auroc", "plot_histogram", "score_checkpoint"]

log = logging.getLogger(__name__)


def log_mean_exp_bpd(bpds: Tensor, num_dims: int) -> Tensor:
    """Bits/dim of the mean probability over estimates: ``bpds`` ``[m, B]`` -> ``[B]`` float64,
    ``-log2(mean_j 2**(-D * bpds[j])) / D``. ``m = 1`` returns ``bpds[0]``."""
    scale = num_dims * math.log(2.0)
    log_p = -bpds.double() * scale  # log P_j of each discrete image, nats
    return -(torch.logsumexp(log_p, dim=0) - math.log(bpds.shape[0])) / scale


def image_bpd(trained: Trained, batches, k: int = 1) -> tuple[Tensor, Tensor]:
    """Per-image bits/dim of ``batches`` (an iterable of ``(x_int [B, C, H, W], y [B])``).

    Returns ``(bpd [N] float64, labels [N])`` on the CPU. ``k`` dequantisation draws (from the
    checkpoint's learned ``q(u | x)`` when it has one, else uniform), combined by
    :func:`log_mean_exp_bpd` (see the module docstring).
    """
    if k < 1:
        raise ValueError(f"k (dequantisation draws per image) must be >= 1, got {k}")
    model, n_bits, dims, seed = trained.model, trained.n_bits, trained.num_dims, trained.eval_seed
    bpds, labels = [], []
    with torch.no_grad():
        for x_int, y in batches:
            x_int = x_int.to(trained.device)
            contexts = [torch.full_like(y, c).to(trained.device) for c in range(trained.num_classes)] or [None]
            draws = []
            for j in range(k):
                if trained.dequantizer is None:
                    x, log_q = dequantize(x_int, n_bits, seed=seed + j), 0.0
                else:
                    x, log_q = trained.dequantizer.dequantize(x_int, hashed_uniform(x_int, seed + j))
                draws += [bits_per_dim(model.log_prob(x, c) - log_q, dims, n_bits) for c in contexts]
            bpds.append(log_mean_exp_bpd(torch.stack(draws), dims).cpu())
            labels.append(y.cpu())
    return torch.cat(bpds), torch.cat(labels)


def _batches(dataset: Dataset, batch_size: int, limit: int | None = None, transform: str | None = None,
             n_bits: int = 8, seed: int = 0):
    """``(x_int, y)`` batches of the first ``limit`` images, in order, optionally transformed."""
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    g = torch.Generator().manual_seed(int(seed))
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        if transform:
            x = transform_batch(transform, x, n_bits, g)
            y = torch.full_like(y, -1) if transform == "noise" else y
        yield x, y


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve of a score that should be higher on the OOD set (the positive
    class); ties count one half. Non-finite scores count as the most anomalous."""
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([np.asarray(in_scores, float), np.asarray(out_scores, float)])
    big = np.finfo(float).max
    scores = np.nan_to_num(scores, nan=big, posinf=big, neginf=-big)
    truth = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(truth, scores))


def plot_histogram(in_bpd, ood_bpd, path: str | Path, in_name: str, ood_name: str,
                   train_mean: float | None = None, title: str = "") -> Path:
    """Overlaid histograms of in-distribution and OOD bits/dim (finite values), written as a PNG
    (matplotlib's object API, so no global backend is changed). The bpd axis is logarithmic when
    the values span more than a factor of 20."""
    from matplotlib.figure import Figure

    a, b = np.asarray(in_bpd, float), np.asarray(ood_bpd, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    both = np.concatenate([a, b])
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    bins = 50
    if both.size and both.min() < both.max():
        lo, hi = both.min(), both.max()
        wide = lo > 0 and hi / lo > 20  # e.g. noise at hundreds of bpd: log-spaced bins keep both visible
        bins = np.geomspace(lo, hi, 60) if wide else np.linspace(lo, hi, 50)
        if wide:
            ax.set_xscale("log")
    for values, label in ((a, f"{in_name} (test, {a.size})"), (b, f"{ood_name} (OOD, {b.size})")):
        ax.hist(values, bins=bins, alpha=0.6, label=label, weights=np.full(values.size, 1.0 / max(values.size, 1)))
    if train_mean is not None and math.isfinite(train_mean):
        ax.axvline(train_mean, color="k", ls="--", lw=1, label=f"train mean {train_mean:.3f}")
    ax.set_xlabel("bits/dim")
    ax.set_ylabel("fraction of images")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _write_csv(path: Path, sets) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label", "bpd", "dataset", "ood"])
        for name, is_ood, bpd, labels in sets:
            for i, (b, y) in enumerate(zip(bpd.tolist(), labels.tolist())):
                w.writerow([i, y, repr(b), name, int(is_ood)])


def score_checkpoint(ckpt_path: str | Path, ood_data: str = "noise", k: int = 1, limit: int | None = None,
                     train_limit: int | None = 2000, batch_size: int = 256, seed: int = 0,
                     out: str | Path | None = None, device: str | None = "cpu", data: dict | None = None,
                     ood: dict | None = None, paths: dict | None = None) -> dict:
    """Score the model's test set and an OOD set; write ``scores.csv`` (``index, label, bpd,
    dataset, ood``), ``histogram.png`` and ``summary.json`` into ``out`` (default
    ``RUN/scores/<ood_data>_k<k>``) and return the summary.

    Args:
        ood_data: ``noise``, ``inverted``, ``shuffled_pixels`` (transforms of the test set, drawn
            with ``seed``) or a dataset name (:func:`glowlab.analysis.ood.ood_data_config`; ``ood``
            overrides its config, ``paths`` resolves ``conf/data/<name>.yaml``).
        limit: score at most this many test (and OOD) images; ``train_limit``: training images
            for the typicality test's mean bpd (None: all).
        data: overrides of the checkpoint's data config.
    """
    check_ood_name(ood_data)
    trained = load_model(ckpt_path, data, device)
    data_config = trained.data_config
    dm = trained.datamodule("test")
    dm.setup("fit")
    in_name = str(data_config.dataset)
    if ood_data in TRANSFORMS:
        ood_batches = _batches(dm.test_dataset, batch_size, limit, ood_data, trained.n_bits, seed)
    else:  # opened first, so a wrong shape or a missing dataset fails before any scoring
        ood_dm = build_ood_datamodule(data_config, ood_data, trained.image_shape, paths, ood)
        ood_batches = _batches(ood_dm.test_dataset, batch_size, limit)
    in_bpd, in_y = image_bpd(trained, _batches(dm.test_dataset, batch_size, limit), k)
    ood_bpd, ood_y = image_bpd(trained, ood_batches, k)
    train_bpd, _ = image_bpd(trained, _batches(dm.train_dataset, batch_size, train_limit), k)
    finite = train_bpd[torch.isfinite(train_bpd)]
    train_mean = float(finite.mean()) if len(finite) else float("nan")
    summary = {
        "ckpt_path": str(Path(ckpt_path).resolve()), "dataset": in_name, "ood_data": ood_data, "k": k,
        "seed": seed, "n_bits": trained.n_bits, "image_shape": list(trained.image_shape),
        "num_test": len(in_bpd), "num_ood": len(ood_bpd), "num_train": len(train_bpd),
        "test_bpd_mean": float(in_bpd.mean()), "ood_bpd_mean": float(ood_bpd.mean()),
        "train_bpd_mean": train_mean,
        "non_finite": int((~torch.isfinite(in_bpd)).sum() + (~torch.isfinite(ood_bpd)).sum()),
        "auroc_bpd": auroc(in_bpd, ood_bpd),
        "auroc_typicality": auroc((in_bpd - train_mean).abs(), (ood_bpd - train_mean).abs()),
    }
    out_dir = Path(out).resolve() if out else run_dir_of(ckpt_path) / "scores" / f"{ood_data}_k{k}"
    out_dir.mkdir(parents=True, exist_ok=True)
    ood_label = ood_data if ood_data != in_name else f"{ood_data} (ood)"
    _write_csv(out_dir / "scores.csv", [(in_name, False, in_bpd, in_y), (ood_label, True, ood_bpd, ood_y)])
    title = (f"AUROC: bpd {summary['auroc_bpd']:.3f}, typicality {summary['auroc_typicality']:.3f}"
             f" (k={k})")
    plot_histogram(in_bpd, ood_bpd, out_dir / "histogram.png", in_name, ood_label, train_mean, title)
    summary.update(csv=str(out_dir / "scores.csv"), histogram=str(out_dir / "histogram.png"))
    write_json(out_dir / "summary.json", summary)
    log.info("scores in %s: %s", out_dir, title)
    return summary
