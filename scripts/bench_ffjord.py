"""glowlab's continuous flows with and without RNODE, and against zuko.flows.CNF, at equal wall clock.

Two problems, each with the same data, optimiser (Adam, lr 1e-3), tolerances and wall-clock budget
for every contestant:

* ``moons``: 2-D two moons (scikit-learn, noise 0.05, standardised with the training mean and std),
  8,000 training and 2,000 held-out points, batch 256, **exact trace** in training and evaluation.
  The figure is held-out nats per point and continuous bits/dim (``nats / (2 ln 2)``, no quantisation).
* ``digits``: scikit-learn's 8x8 digits as 64-dimensional vectors, 5-bit, dequantised to
  ``[-0.5, 0.5)`` (:func:`glowlab.likelihood.dequantize`), first 1,437 train / last 360 held out,
  batch 128, **Hutchinson trace in training and exact trace in evaluation**; held-out bits/dim
  (:func:`glowlab.likelihood.bits_per_dim`, 5 bits, D = 64; the held-out noise is seeded).

Contestants: ``glowlab`` (:class:`~glowlab.models.VectorFFJORD`, one CNF, an MLP with the time
concatenated to every layer's input, ELU, two hidden layers, dopri5, direct back-propagation),
``glowlab+rnode`` (the same with RNODE's kinetic and Jacobian penalties at 0.01 each) and ``zuko``
(``zuko.flows.CNF`` with the same hidden widths and ELU, its own adaptive solver and adjoint, and a
sinusoidal time embedding; it has about 5% more parameters on moons, 1% more on digits).
Every solver runs at rtol = 1e-5, atol = 1e-6 (zuko's defaults).

Contestants take one training step each in turn on the same batch (so a shared machine's load hits
all alike), each until it has trained ``--budget`` seconds or done ``--max-steps`` steps. Reported per
contestant: steps done, median seconds per training step, mean NFE per training step (function
evaluations in the forward solve and in the backward pass; zuko's are counted by a hook on its
network), and the held-out figure.

Writes JSON (``--out``) and prints a Markdown table. Run with one thread:
``OMP_NUM_THREADS=1 python scripts/bench_ffjord.py --budget 60``. ``--quick`` is a smoke test.

References:
    Grathwohl et al., "FFJORD", ICLR 2019. Finlay et al., "How to train your neural ODE", ICML 2020.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from glowlab.likelihood import bits_per_dim, dequantize
from glowlab.models import VectorFFJORD

CONTESTANTS = ("glowlab", "glowlab+rnode", "zuko")
RTOL, ATOL, RNODE_WEIGHT = 1e-5, 1e-6, 0.01


class Contestant:
    """A uniform face: ``module``, ``log_prob(x)`` (train or eval), ``nfe()`` -> (forward, backward)."""

    def __init__(self, name: str, dim: int, hidden: tuple[int, ...], trace: str):
        self.name = name
        if name.startswith("glowlab"):
            weight = RNODE_WEIGHT if name.endswith("rnode") else 0.0
            self.module = VectorFFJORD((dim,), hidden_features=hidden, activation="elu", trace=trace,
                                       eval_trace="exact", rtol=RTOL, atol=ATOL, kinetic_weight=weight,
                                       jacobian_weight=weight)
            self.log_prob = self.module.log_prob
            self.regularization = self.module.regularization_loss
        else:
            import zuko

            self.module = zuko.flows.CNF(dim, hidden_features=hidden, rtol=RTOL, atol=ATOL, exact=trace == "exact")
            self.train_exact = trace == "exact"
            self.calls = 0
            self.module.transform.ode.register_forward_hook(self._count)
            self.log_prob = lambda x: self.module().log_prob(x)
            self.regularization = lambda: 0.0

    def _count(self, *_):
        self.calls += 1

    def train(self, mode: bool) -> None:
        self.module.train(mode)
        if self.name == "zuko":  # exact trace in evaluation, whatever training used
            self.module.transform.exact = self.train_exact or not mode

    def nfe_mark(self) -> int:
        return self.module.nfe["total_forward"] + self.module.nfe["total_backward"] if self.name != "zuko" \
            else self.calls

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def moons(n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n_train + n_test, noise=0.05, random_state=0)
    x = torch.as_tensor(x, dtype=torch.float32)
    mean, std = x[:n_train].mean(0), x[:n_train].std(0)
    x = (x - mean) / std
    return x[:n_train], x[n_train:]


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data, dtype=torch.long)  # [1797, 64], 0..16, used as 5-bit
    return x[:1437], x[1437:]


class Trainer:
    """Adam on one contestant, one step at a time, recording seconds and NFE per step."""

    def __init__(self, c: Contestant):
        self.c, self.opt = c, torch.optim.Adam(c.module.parameters(), lr=1e-3)
        self.times, self.nfes = [], []

    def step(self, x: torch.Tensor) -> None:
        self.c.train(True)
        t0, n0 = time.perf_counter(), self.c.nfe_mark()
        loss = -self.c.log_prob(x).mean() + self.c.regularization()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.times.append(time.perf_counter() - t0)
        self.nfes.append(self.c.nfe_mark() - n0)

    def summary(self) -> dict:
        half = self.nfes[len(self.nfes) // 2:] or self.nfes
        return {"steps": len(self.times), "s_per_step": statistics.median(self.times),
                "train_s": sum(self.times), "nfe_per_step": statistics.mean(self.nfes),
                "nfe_per_step_last_half": statistics.mean(half)}


def train_round_robin(trainers: list[Trainer], sample_batch, budget_s: float, max_steps: int) -> None:
    """One step of each contestant in turn (the same batches, and the same machine load on a shared
    CPU), until each has trained ``budget_s`` seconds or done ``max_steps`` steps."""
    step = 0
    while step < max_steps:
        active = [t for t in trainers if sum(t.times) < budget_s]
        if not active:
            break
        x = sample_batch(step)
        for t in active:
            t.step(x)
        step += 1


def evaluate(c: Contestant, x: torch.Tensor, batch: int = 500) -> float:
    """Mean held-out log-density in nats per point (exact trace)."""
    c.train(False)
    with torch.no_grad():
        return float(torch.cat([c.log_prob(x[i:i + batch]) for i in range(0, len(x), batch)]).mean())


def run(args) -> dict:
    results = {}
    problems = {"moons": (2, (64, 64), "exact"), "digits": (64, (256, 256), "hutchinson")}
    if args.quick:
        problems = {"moons": (2, (8,), "exact"), "digits": (64, (16,), "hutchinson")}
    for problem, (dim, hidden, trace) in problems.items():
        if problem not in args.problems:
            continue
        if problem == "moons":
            x_train, x_test = moons(*((512, 200) if args.quick else (8000, 2000)))
            batch = 256

            def sample_batch(step, x_train=x_train, batch=batch):
                gen = torch.Generator().manual_seed(step)
                return x_train[torch.randint(len(x_train), (batch,), generator=gen)]

            held_out = x_test
        else:
            x_train_int, x_test_int = digits()
            batch = 128

            def sample_batch(step, x_train_int=x_train_int, batch=batch):
                gen = torch.Generator().manual_seed(step)
                idx = torch.randint(len(x_train_int), (batch,), generator=gen)
                return dequantize(x_train_int[idx], 5, generator=gen)

            held_out = dequantize(x_test_int[: 50 if args.quick else None], 5, seed=0)
        names = [n for n in args.contestants if n != "zuko" or _has_zuko()]
        trainers = []
        for n in names:  # the same seed for each: glowlab with and without RNODE start from one init
            torch.manual_seed(args.seed)
            trainers.append(Trainer(Contestant(n, dim, hidden, trace)))
        train_round_robin(trainers, sample_batch, args.budget, args.max_steps)
        results[problem] = {}
        for name, t in zip(names, trainers, strict=True):
            r = t.summary()
            nats = evaluate(t.c, held_out)
            r.update(params=t.c.params, held_out_nats=nats)
            if problem == "moons":
                r["held_out_bpd"] = -nats / (dim * math.log(2))
            else:
                r["held_out_bpd"] = float(bits_per_dim(torch.tensor(nats, dtype=torch.float64), dim, 5))
            results[problem][name] = r
            print(f"{problem:6s} {name:14s} {r}", flush=True)
    return {"config": {"budget_s": args.budget, "max_steps": args.max_steps, "seed": args.seed, "rtol": RTOL,
                       "load_average": _load_average(),
                       "atol": ATOL, "rnode_weight": RNODE_WEIGHT, "quick": args.quick,
                       "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "cpu": platform.processor() or platform.machine()},
            "results": results}


def _load_average() -> float | None:
    """The 1-minute load average: timings on a shared machine are only comparable at equal load."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _has_zuko() -> bool:
    try:
        import zuko  # noqa: F401
    except ImportError:
        return False
    return True


def table(data: dict) -> str:
    lines = ["| problem | model | params | steps | s/step | NFE/step (last half) | held-out bits/dim |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for problem, rows in data["results"].items():
        for name, r in rows.items():
            lines.append(f"| {problem} | {name} | {r['params']} | {r['steps']} | {r['s_per_step']:.3f} | "
                         f"{r['nfe_per_step']:.0f} ({r['nfe_per_step_last_half']:.0f}) | {r['held_out_bpd']:.3f} |")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=60.0, help="seconds of training per contestant")
    p.add_argument("--max-steps", type=int, default=10**9, help="stop earlier after this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--contestants", nargs="+", default=list(CONTESTANTS), choices=CONTESTANTS)
    p.add_argument("--problems", nargs="+", default=["moons", "digits"], choices=["moons", "digits"])
    p.add_argument("--out", type=Path, default=Path("docs/bench/ffjord.json"))
    p.add_argument("--quick", action="store_true", help="smoke test: tiny models, 3 steps each")
    args = p.parse_args(argv)
    if args.quick:
        args.budget, args.max_steps = min(args.budget, 10.0), 3
    return args


def main(argv=None) -> None:
    args = parse(argv)
    data = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2))
    print(table(data))


if __name__ == "__main__":
    main()
