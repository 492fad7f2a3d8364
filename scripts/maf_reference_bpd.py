"""Convert the MAF paper's logit-space log-likelihoods to bits/dim of the dequantised pixels.

The MAF paper (Papamakarios et al. 2017, Table 2) reports ``LL_y``, the mean test log-density in
nats of ``y = logit(v)``, ``v = λ + (1 - 2λ) u``, ``u = (x_int + noise) / 256``. glowlab reports
bits/dim of the dequantised pixels ``x_int + noise ∈ [0, 256)``:

    log p(x) = LL_y + J(u) - D log 256,   J(u) = Σ_d log((1 - 2λ) / (v_d (1 - v_d))),
    bpd      = 8 - (LL_y + E_test[J]) / (D ln 2).

``E_test[J]`` depends on the test images; this script estimates it (three draws of the uniform
noise) on the MNIST test set from ``../shared`` (λ = 1e-6) and, when given ``--cifar DIR`` with
torchvision's CIFAR-10, on its test set (λ = 0.05), and prints each reference number converted.

Usage: ``python scripts/maf_reference_bpd.py [--mnist PATH.gz] [--cifar DIR]``
"""

from __future__ import annotations

import argparse
import gzip
import math
from pathlib import Path

import numpy as np

#: (dataset, model) -> the paper's mean test log-likelihood in logit space, nats (Table 2).
PAPER_LL = {
    "mnist": {"MADE MoG": -1038.5, "Real NVP (5)": -1323.2, "MAF (5)": -1300.5, "MAF (10)": -1313.1,
              "MAF MoG (5)": -1100.3},
    "cifar10": {"Real NVP (5)": 2576.0, "MAF (5)": 2936.0, "MAF (10)": 3049.0, "MAF MoG (5)": 2911.0},
}
LAMBDA = {"mnist": 1e-6, "cifar10": 0.05}


def mean_logit_jacobian(x_int: np.ndarray, lam: float, draws: int = 3, seed: int = 0) -> float:
    """``E[J]`` in nats per image over images ``x_int`` ``[N, D]`` and uniform dequantisation noise."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        v = lam + (1 - 2 * lam) * (x_int + rng.random(x_int.shape)) / 256
        values.append(np.log((1 - 2 * lam) / (v * (1 - v))).sum(1).mean())
    return float(np.mean(values))


def to_bpd(ll_y: float, jac: float, dims: int) -> float:
    """Bits/dim of the dequantised 8-bit pixels from a logit-space log-likelihood (nats per image)."""
    return 8 - (ll_y + jac) / (dims * math.log(2))


def load_mnist(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float64)


def load_cifar_test(root: Path) -> np.ndarray:
    from torchvision.datasets import CIFAR10

    return CIFAR10(str(root), train=False, download=False).data.reshape(10000, -1).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--mnist", type=Path, default=here.parent / "shared/data/mnist/t10k-images-idx3-ubyte.gz")
    parser.add_argument("--cifar", type=Path, default=None, help="torchvision CIFAR-10 root (optional)")
    args = parser.parse_args()
    sets = {}
    if args.mnist.exists():
        sets["mnist"] = load_mnist(args.mnist)
    else:
        print(f"no MNIST test set at {args.mnist}; skipping it")
    if args.cifar is not None:
        sets["cifar10"] = load_cifar_test(args.cifar)
    for name, x in sets.items():
        jac = mean_logit_jacobian(x, LAMBDA[name])
        print(f"{name}: lambda={LAMBDA[name]}, D={x.shape[1]}, E[J]={jac:.1f} nats/image ({jac / x.shape[1]:.4f}/dim)")
        for model, ll in PAPER_LL[name].items():
            print(f"  {model:14s} LL_y={ll:8.1f} nats -> {to_bpd(ll, jac, x.shape[1]):.3f} bits/dim")


if __name__ == "__main__":
    main()
