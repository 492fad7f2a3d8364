"""glowlab's planar flows against normflows' on Rezende & Mohamed's energies U1 to U4, fitted by reverse KL.

For each target, flow length ``K`` and seed, both libraries fit a 2-D density ``q`` (a base
``N(0, I)``, or a learned diagonal Gaussian with ``--trainable-base`` as in ``experiment=vi_u1``,
pushed through ``K`` planar layers ``f(z) = z + û tanh(wᵀz + b)``) with the same loss, optimiser and
schedule, those of ``experiment=vi_u1`` (whose 11,000 steps this run shortens by default):

* loss: the annealed free energy ``E_q[log q(z) + β_t U(z)]`` from ``--batch`` reparameterised draws
  (:func:`glowlab.vi.annealed_free_energy`, called on both models), ``β_t = min(1, 0.01 + t / A)``
  (:func:`glowlab.vi.beta_schedule`) with ``A = --anneal-steps`` (default ``10/11`` of the steps, the
  ratio of vi_u1's 10,000 annealing steps to its 11,000 steps);
* Adam (betas 0.9, 0.999), lr 1e-3, linear warm-up over 100 steps; a step whose loss or gradient is
  not finite is skipped (as glowlab's training module does) and counted (``nonfinite_steps``).

normflows' side is :class:`NormflowsPlanarFlow`: ``normflows.distributions.DiagGaussian(2)`` then
``K`` ``normflows.flows.Planar((2,))`` layers, with ``log q = log q₀(z₀) − Σ_k log|det ∂f_k|``.

Targets: glowlab's exact ``glowlab.vi.energy("u1" .. "u4")`` for **both** libraries (the paper's
Table 1; U2 to U4 confined to ``|z₁| ≤ 4`` by a soft wall). normflows ships *modified* versions of
them in ``normflows.distributions.prior`` (``TwoModes``, ``Sinusoidal``, ``Sinusoidal_gap``,
``Sinusoidal_split``): other scales, one width for both components of U4, and a quartic envelope
``(‖z‖₄ / 20s)⁴`` that makes U2 to U4 proper; those are not used here.

The two planar layers (normflows 1.7.3) are the same map with the same invertibility fix
``û = u + (softplus(wᵀu) − 1 − wᵀu) w / ‖w‖²``: normflows divides by ``‖w‖²`` (correct; ports that
divide by ``‖w‖`` are not). Differences:

* initialisation: normflows draws ``u ~ U(−√2, √2)`` and ``w ~ U(−√(2/D), √(2/D))``; glowlab draws
  both from ``U(−1/√D, 1/√D)``; ``b = 0`` in both. ``--init shared`` copies glowlab's initial
  parameters into normflows' layers, which then differ only in rounding;
* numerics: normflows computes the softplus as ``log(1 + exp(wᵀu))`` (``inf`` once ``wᵀu`` is above
  about 88 in float32) and the log-determinant as ``log|1 + wᵀû h'(a)|``; glowlab uses ``softplus``
  and ``log1p``.

Both libraries draw their base noise with one ``torch.randn(n, 2)`` per step from torch's global
generator. The two libraries take one step each in turn (so a shared machine's load hits both alike),
each with its own copy of the generator's state, seeded with the run's seed: they see the same noise
at every step. The evaluation noise is seeded the same way for both.

Reported per (target, K, library, seed): ``KL(q‖p) = log Z − ELBO`` (nats, an estimate with the
ELBO's Monte-Carlo standard error), ``log Z`` by quadrature (:meth:`glowlab.vi.Energy.log_z`), the
ELBO from ``--eval-samples`` draws (:func:`glowlab.vi.elbo_estimate`), and the median seconds per
training step. Writes JSON (``--out``) and prints a Markdown table. ``--quick`` is a smoke test.

Usage:
    OMP_NUM_THREADS=1 python scripts/bench_vi.py --out docs/bench/vi_planar.json

References:
    D. J. Rezende and S. Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
    V. Stimper et al., "normflows: A PyTorch Package for Normalizing Flows", JOSS 2023.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from glowlab.vi import ENERGY_NAMES, VariationalFlow, annealed_free_energy, beta_schedule, elbo_estimate
from glowlab.vi import energy as get_energy

LIBRARIES = ("glowlab", "normflows")
STEPS = 4_000  # default: the whole run (4 targets x K = 2, 8, 32 x 2 libraries) in about 10 minutes, one thread


class NormflowsPlanarFlow(nn.Module):
    """normflows' ``DiagGaussian(2)`` base pushed through ``length`` ``normflows.flows.Planar`` layers.

    ``rsample_and_log_prob(n) -> (z [n, 2], log q(z) [n] nats)``, as glowlab's densities, so that
    :func:`glowlab.vi.annealed_free_energy` and :func:`glowlab.vi.elbo_estimate` apply unchanged.
    """

    def __init__(self, length: int, trainable_base: bool = False):
        import normflows as nf

        super().__init__()
        self.base = nf.distributions.DiagGaussian(2, trainable=trainable_base)
        self.flows = nn.ModuleList(nf.flows.Planar((2,)) for _ in range(length))

    def rsample_and_log_prob(self, n: int):
        z, log_q = self.base(n)
        for layer in self.flows:
            z, ladj = layer(z)
            log_q = log_q - ladj
        return z, log_q


def build(library: str, length: int, trainable_base: bool, seed: int) -> nn.Module:
    """One library's planar flow of ``length`` layers, initialised from ``seed`` (its own init scheme)."""
    torch.manual_seed(seed)
    if library == "glowlab":
        return VariationalFlow(2, flow="planar", length=length, trainable_base=trainable_base)
    return NormflowsPlanarFlow(length, trainable_base)


@torch.no_grad()
def share_parameters(source: VariationalFlow, target: NormflowsPlanarFlow) -> None:
    """Copy glowlab's ``(u, w, b)`` of every layer and the base's ``(μ, log σ)`` into normflows' model."""
    layers = list(source.sampler)
    if len(layers) != len(target.flows):
        raise ValueError(f"lengths differ: glowlab {len(layers)} layers, normflows {len(target.flows)}")
    for mine, theirs in zip(layers, target.flows, strict=True):
        theirs.u.copy_(mine.u.view_as(theirs.u))
        theirs.w.copy_(mine.w.view_as(theirs.w))
        theirs.b.copy_(mine.b.view_as(theirs.b))
    target.base.loc.copy_(source.base.loc.view_as(target.base.loc))
    target.base.log_scale.copy_(source.base.log_scale.view_as(target.base.log_scale))


class Trainer:
    """Adam with linear warm-up on one model; its own copy of the global RNG state; step timings."""

    def __init__(self, model: nn.Module, args, seed: int):
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        warmup = max(1, args.warmup_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: min(1.0, (step + 1) / warmup))
        torch.manual_seed(seed)
        self.rng = torch.get_rng_state()
        self.times: list[float] = []
        self.nonfinite = 0

    def step(self, target, batch: int, beta: float) -> None:
        torch.set_rng_state(self.rng)
        t0 = time.perf_counter()
        loss = annealed_free_energy(self.model, target, batch, beta)
        self.opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            finite = all(bool(torch.isfinite(p.grad).all()) for p in self.model.parameters() if p.grad is not None)
        if finite:
            self.opt.step()
        else:
            self.nonfinite += 1
        self.sched.step()
        self.times.append(time.perf_counter() - t0)
        self.rng = torch.get_rng_state()


def fit_pair(target, length: int, seed: int, args) -> dict[str, dict]:
    """Fit every library's flow to ``target`` side by side; their results keyed by library."""
    models = {lib: build(lib, length, args.trainable_base, seed) for lib in args.libraries}
    if args.init == "shared" and {"glowlab", "normflows"} <= set(models):
        share_parameters(models["glowlab"], models["normflows"])
    trainers = {lib: Trainer(m, args, seed) for lib, m in models.items()}
    for step in range(args.steps):
        beta = beta_schedule(step, args.beta0, args.anneal_steps)
        for t in trainers.values():
            t.step(target, args.batch, beta)
    out = {}
    for lib, t in trainers.items():
        torch.manual_seed(seed + 100_000)  # the same evaluation noise for both libraries
        stats = elbo_estimate(t.model, target, n=args.eval_samples, log_z=args.log_z[target.name])
        out[lib] = {**stats, "kl_se": stats["elbo_se"], "s_per_step": statistics.median(t.times),
                    "train_s": sum(t.times), "nonfinite_steps": t.nonfinite,
                    "params": sum(p.numel() for p in t.model.parameters())}
    return out


def summarise(runs: list[dict]) -> dict:
    """``{target: {K: {library: {kl, kl_sd, kl_se, s_per_step, seeds}}}}``: means over seeds."""
    summary: dict = {}
    for r in runs:
        summary.setdefault(r["target"], {}).setdefault(str(r["length"]), {}).setdefault(r["library"], []).append(r)
    for by_k in summary.values():
        for by_lib in by_k.values():
            for lib, rs in by_lib.items():
                kls = [r["kl"] for r in rs]
                by_lib[lib] = {"kl": statistics.fmean(kls), "kl_sd": statistics.stdev(kls) if len(kls) > 1 else None,
                               "kl_se": statistics.fmean(r["kl_se"] for r in rs) / len(rs) ** 0.5,
                               "s_per_step": statistics.median(r["s_per_step"] for r in rs),
                               "nonfinite_steps": sum(r["nonfinite_steps"] for r in rs), "seeds": len(rs)}
    return summary


def table(summary: dict, libraries=LIBRARIES) -> str:
    """Markdown: one row per (target, K); KL in nats (± the seeds' sd, or the Monte-Carlo se for one seed)."""
    head = "| target | K | " + " | ".join(f"{lib} KL (nats)" for lib in libraries) + " | " + \
        " | ".join(f"{lib} ms/step" for lib in libraries) + " |"
    lines = [head, "| --- | ---: |" + " ---: |" * (2 * len(libraries))]
    for target, by_k in summary.items():
        for k, by_lib in by_k.items():
            kl = [_kl_cell(by_lib[lib]) if lib in by_lib else "—" for lib in libraries]
            ms = [f"{1e3 * by_lib[lib]['s_per_step']:.2f}" if lib in by_lib else "—" for lib in libraries]
            lines.append(f"| {target} | {k} | " + " | ".join(kl) + " | " + " | ".join(ms) + " |")
    return "\n".join(lines)


def _kl_cell(s: dict) -> str:
    spread = s["kl_sd"] if s["kl_sd"] is not None else s["kl_se"]
    flag = f" ({s['nonfinite_steps']} non-finite steps)" if s["nonfinite_steps"] else ""
    return f"{s['kl']:.3f} ± {spread:.3f}{flag}"


def run(args) -> dict:
    runs = []
    args.log_z = {name: get_energy(name).log_z() for name in args.targets}
    for name in args.targets:
        target = get_energy(name)
        for length in args.lengths:
            for seed in args.seeds:
                for lib, r in fit_pair(target, length, seed, args).items():
                    runs.append({"target": name, "length": length, "library": lib, "seed": seed, **r})
                    print(f"{name} K={length:2d} seed={seed} {lib:9s} KL {r['kl']:.4f} ± {r['kl_se']:.4f} nats, "
                          f"{1e3 * r['s_per_step']:.2f} ms/step, {r['nonfinite_steps']} non-finite", flush=True)
    try:
        import normflows

        normflows_version = normflows.__version__
    except ImportError:  # --libraries glowlab on a machine without the bench extra
        normflows_version = None
    config = {k: getattr(args, k) for k in ("steps", "batch", "lr", "warmup_steps", "beta0", "anneal_steps",
                                             "eval_samples", "trainable_base", "init", "seeds", "quick")}
    config.update(torch=torch.__version__, normflows=normflows_version, threads=torch.get_num_threads(),
                  load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                  cpu=platform.processor() or platform.machine(), log_z=args.log_z)
    return {"config": config, "runs": runs, "summary": summarise(runs)}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=STEPS, help="optimiser steps per fit (vi_u1: 11000)")
    p.add_argument("--batch", type=int, default=256, help="draws of q per step (vi_u1: 256)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--beta0", type=float, default=0.01, help="beta at step 0")
    p.add_argument("--anneal-steps", type=int, default=None,
                   help="steps for beta to reach 1 (default 10/11 of --steps)")
    p.add_argument("--eval-samples", type=int, default=100_000, help="draws for the final ELBO (at least 10,000)")
    p.add_argument("--targets", nargs="+", default=list(ENERGY_NAMES), choices=ENERGY_NAMES)
    p.add_argument("--lengths", nargs="+", type=int, default=[2, 8, 32])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    p.add_argument("--trainable-base", action="store_true", help="learn the base's mean and scale (vi_u1 does)")
    p.add_argument("--init", choices=("own", "shared"), default="own",
                   help="own: each library's initialisation; shared: normflows starts from glowlab's parameters")
    p.add_argument("--out", type=Path, default=Path("docs/bench/vi_planar.json"))
    p.add_argument("--quick", action="store_true", help="smoke test: 30 steps, K = 2 and 8, 10,000 eval draws")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.eval_samples = min(args.steps, 30), 10_000
        args.lengths = [k for k in args.lengths if k <= 8] or [2]
    if args.anneal_steps is None:
        args.anneal_steps = round(args.steps * 10 / 11)
    for name in ("steps", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.eval_samples < 10_000:
        p.error(f"--eval-samples must be at least 10,000 (the ELBO's Monte-Carlo error), got {args.eval_samples}")
    if any(k < 1 for k in args.lengths):
        p.error(f"--lengths must be positive flow lengths, got {args.lengths}")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    data = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2))
    print(table(data["summary"], args.libraries))
    return data


if __name__ == "__main__":
    main()
