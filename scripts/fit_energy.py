"""Fit a flow to one of Rezende & Mohamed's 2-D energies by reverse KL, in plain PyTorch.

Minimises the annealed free energy ``E_q[log q(z) + β_t U(z)]`` with ``β_t = min(1, 0.01 + t/A)``
(the paper's schedule with ``A = --anneal-steps``; the paper used A = 10000, the default here is
4000 to keep a fit near 2 minutes of CPU) with Adam, then prints and optionally writes (``--json``) the ELBO
estimate from ``--eval-samples`` draws, its standard error, ``log Z`` by quadrature and
``KL(q‖p) = log Z − ELBO`` (nats), and writes the target-vs-samples PNG (the paper's Figure 3).

Usage:
    OMP_NUM_THREADS=1 python scripts/fit_energy.py --target u1 --flow planar --length 32 \\
        --steps 5000 --anneal-steps 4000 --png docs/images/vi_u1.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from glowlab.vi import (
    ENERGY_NAMES,
    FLOWS,
    VariationalFlow,
    annealed_free_energy,
    beta_schedule,
    elbo_estimate,
    plot_target_and_samples,
)
from glowlab.vi import energy as get_energy


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="u1", choices=ENERGY_NAMES)
    p.add_argument("--flow", default="planar", choices=[f for f in FLOWS])
    p.add_argument("--length", type=int, default=32, help="number of flow layers K")
    p.add_argument("--steps", type=int, default=5_000)
    p.add_argument("--batch", type=int, default=256, help="draws of q per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta-start", type=float, default=0.01)
    p.add_argument("--anneal-steps", type=int, default=4_000,
                   help="steps for beta to reach 1 (the paper: 10000); 0: no annealing (beta = 1)")
    p.add_argument("--eval-samples", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", type=Path, default=None, help="where to write the figure")
    p.add_argument("--json", type=Path, default=None, help="where to write the final metrics")
    return p.parse_args(argv)


def fit(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    target = get_energy(args.target)
    q = VariationalFlow(2, flow=args.flow, length=args.length if args.flow != "diagonal" else 0)
    opt = torch.optim.Adam(q.parameters(), lr=args.lr, foreach=True)
    start, cpu_start = time.time(), time.process_time()
    for step in range(args.steps):
        beta = beta_schedule(step, args.beta_start, args.anneal_steps)
        loss = annealed_free_energy(q, target, args.batch, beta)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:6d}  beta {beta:.3f}  free energy {loss.item():9.4f}", flush=True)
    train_s, cpu_s = time.time() - start, time.process_time() - cpu_start
    stats = elbo_estimate(q, target, n=args.eval_samples)
    stats.update(target=args.target, flow=args.flow, length=args.length, steps=args.steps, batch=args.batch,
                 train_seconds=round(train_s, 1), train_cpu_seconds=round(cpu_s, 1), lr=args.lr,
                 anneal_steps=args.anneal_steps, seed=args.seed)
    if args.png is not None:
        samples = q.sample(args.eval_samples)
        title = f"{args.flow} K={args.length}: KL = {stats['kl']:.3f} ± {stats['elbo_se']:.3f} nats"
        plot_target_and_samples(target, samples, args.png, title=title)
        stats["png"] = str(args.png)
    return stats


def main(argv=None) -> dict:
    args = parse_args(argv)
    stats = fit(args)
    print(f"{args.target} {args.flow} K={args.length}: ELBO {stats['elbo']:.4f} ± {stats['elbo_se']:.4f} "
          f"(n={stats['n']}), log Z {stats['log_z']:.4f}, KL(q||p) {stats['kl']:.4f} nats; "
          f"trained {stats['train_seconds']} s wall, {stats['train_cpu_seconds']} s CPU")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(stats, indent=2, sort_keys=True))
    assert math.isfinite(stats["kl"])
    return stats


if __name__ == "__main__":
    main()
