"""MAF against IAF at 1x28x28: seconds to sample and to evaluate ``log_prob`` of ``--n`` images.

Two networks: the MADE of ``conf/experiment/mnist_idx_maf.yaml`` (5 layers, 2 x 1024 hidden units
over the 784 pixels) and masked convolutions (5 layers, 64 hidden channels). The slow direction
(MAF sampling, IAF density) is 784 sequential passes per layer, 3,920 in all; the fast one is one
pass per layer. Untrained models (the cost does not depend on the weights). Run with one thread:
``OMP_NUM_THREADS=1 python scripts/maf_sampling_cost.py --n 4``.
"""

from __future__ import annotations

import argparse
import time

import torch

from glowlab.models import IAF, MAF


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="images per call")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.n < 1 or args.threads < 1:
        parser.error("--n and --threads must be >= 1")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    for network, hidden in (("made", 1024), ("conv", 64)):
        for cls in (MAF, IAF):
            model = cls(image_shape=(1, 28, 28), layers=5, hidden_features=hidden, network=network).eval()
            with torch.no_grad():
                start = time.perf_counter()
                x = model.sample(args.n)
                t_sample = time.perf_counter() - start
                start = time.perf_counter()
                model.log_prob(x)
                t_density = time.perf_counter() - start
            print(f"{cls.__name__} network={network} hidden={hidden}: sample({args.n}) {t_sample:.2f} s, "
                  f"log_prob({args.n}) {t_density:.2f} s ({model.sampling_passes} sequential passes in the slow "
                  f"direction)", flush=True)


if __name__ == "__main__":
    main()
