"""glowlab's MAF against zuko.flows.MAF and nflows' MaskedAutoregressiveFlow on sklearn digits.

Same data, same parameter count, same optimiser, same wall-clock budget:

* data: scikit-learn's 8x8 digits as 64-dimensional vectors, 5-bit (values 0..16), dequantised
  with uniform noise to ``[-0.5, 0.5)`` (:func:`glowlab.likelihood.dequantize`); the first 1,437
  images train, the last 360 are held out (as ``conf/data/digits.yaml``);
* models: ``layers`` MADE layers with affine transformers and alternating orders. glowlab's has
  ``2 x hidden`` hidden units per layer; zuko's and nflows' hidden widths are chosen so their
  parameter counts are the closest to glowlab's (nflows' MADE uses residual blocks by default);
* density throughput: ``log_prob`` of a batch of 1,024 in eval mode without a graph, samples/s;
  sampling throughput: ``sample(256)``, samples/s; medians of ``--reps`` rounds in which the
  libraries take turns (so does training: seed by seed, library by library);
* held-out bits/dim (:func:`glowlab.likelihood.bits_per_dim`, 5 bits, D = 64) after training with
  Adam (lr 1e-3, batch 128) for ``--budget`` seconds of wall clock, for each of ``--seeds`` seeds;
  the test noise is the same for every model (seeded).

``--libs glow,glow_ar,glow_arstep`` compares, on the same data and budget, the digits Glow of
``conf/experiment/digits_glow.yaml`` (1x8x8, levels 2, depth 8, hidden 64) with its Gaussian top
prior against the same Glow with an autoregressive top prior
(:func:`glowlab.image.autoregressive_prior.glow_with_autoregressive_prior`, 2 layers of masked
convolutions with 64 hidden channels) and with one masked autoregressive step appended to each
level instead (:func:`~glowlab.image.autoregressive_prior.glow_with_autoregressive_steps`, 32
hidden channels); their parameter counts are not matched.

Writes a JSON file (``--out``) and prints a Markdown table. Run with one thread per process, e.g.
``OMP_NUM_THREADS=1 python scripts/bench_autoregressive.py``. ``--quick`` is a smoke test (tiny
models, a fraction of a second each). Peer packages missing from the environment are skipped
(``pip install zuko nflows``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from glowlab.likelihood import bits_per_dim, dequantize
from glowlab.models.maf import MAF

LIBS = ("glowlab", "zuko", "nflows")
GLOWS = ("glow", "glow_ar", "glow_arstep")
GLOW_ARGS = {"image_shape": (1, 8, 8), "levels": 2, "depth": 8, "hidden_channels": 64}
N_BITS, DIMS, N_TRAIN = 5, 64, 1437


class Model:
    """A uniform face on the three libraries: ``module``, ``log_prob(x)`` and ``sample(n)``."""

    def __init__(self, lib: str, hidden: int, layers: int):
        self.lib, self.hidden = lib, hidden
        if lib == "glowlab":
            self.module = MAF(event_shape=(DIMS,), layers=layers, hidden_features=hidden, hidden_layers=2)
            self.log_prob, self.sample = self.module.log_prob, self.module.sample
        elif lib == "zuko":
            import zuko

            self.module = zuko.flows.MAF(DIMS, transforms=layers, hidden_features=(hidden, hidden))
            self.log_prob = lambda x: self.module().log_prob(x)
            self.sample = lambda n: self.module().sample((n,))
        elif lib == "nflows":
            from nflows.flows import MaskedAutoregressiveFlow

            self.module = MaskedAutoregressiveFlow(DIMS, hidden, layers, num_blocks_per_layer=2)
            self.log_prob, self.sample = self.module.log_prob, self.module.sample
        elif lib in GLOWS:
            from glowlab.image import autoregressive_prior as ar
            from glowlab.models import Glow

            self.module = {"glow": lambda: Glow(**GLOW_ARGS),
                           "glow_ar": lambda: ar.glow_with_autoregressive_prior(2, hidden, **GLOW_ARGS),
                           "glow_arstep": lambda: ar.glow_with_autoregressive_steps(hidden // 2, **GLOW_ARGS)}[lib]()
            self.log_prob = lambda x: self.module.log_prob(x.view(-1, *GLOW_ARGS["image_shape"]))
            self.sample = lambda n: self.module.sample(n).flatten(1)
        else:
            raise ValueError(f"lib must be one of {LIBS + GLOWS}, got {lib!r}")

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def matched_hidden(lib: str, target: int, layers: int, upper: int) -> int:
    """The hidden width in ``[1, upper]`` whose parameter count is the closest to ``target``
    (counts grow with the width)."""
    lo, hi = 1, upper
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if Model(lib, mid, layers).params <= target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(Model(lib, h, layers).params - target))


def load_digits_int() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x = torch.as_tensor(load_digits().data, dtype=torch.long)  # [1797, 64], 0..16
    return x[:N_TRAIN], x[N_TRAIN:]


@torch.no_grad()
def held_out_bpd(model: Model, x_test_int: torch.Tensor) -> float:
    gen = torch.Generator().manual_seed(1234)
    x = dequantize(x_test_int, N_BITS, generator=gen)
    return bits_per_dim(model.log_prob(x), DIMS, N_BITS).mean().item()


def train_for(model: Model, x_train_int: torch.Tensor, budget_s: float, seed: int, batch: int = 128) -> int:
    """Adam steps on fresh dequantisation noise until ``budget_s`` seconds have passed; the step count."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.module.parameters(), lr=1e-3)
    model.module.train()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget_s:
        idx = torch.randint(len(x_train_int), (batch,), generator=gen)
        x = dequantize(x_train_int[idx], N_BITS, generator=gen)
        loss = -model.log_prob(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    model.module.eval()
    return steps


def interleaved_rates(calls: dict, n: int, reps: int) -> dict:
    """Items per second of each ``calls[name]()`` (which handles ``n`` items): the median over ``reps``
    rounds, each round timing every call once, so a change in the machine's load hits them alike."""
    times = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm-up
    for _ in range(reps):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: n / statistics.median(t) for name, t in times.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available(lib: str) -> bool:
    try:
        __import__({"zuko": "zuko", "nflows": "nflows"}.get(lib, "glowlab"))
    except ImportError:
        return False
    return True


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    x_train, x_test = load_digits_int()
    target = Model("glowlab", args.hidden, args.layers).params
    hidden = {}
    for lib in args.libs:
        if not available(lib):
            print(f"{lib} is not installed; skipping it (pip install {lib})")
        elif lib in GLOWS:
            hidden[lib] = GLOW_ARGS["hidden_channels"]  # the AR prior's hidden channels too
        else:
            hidden[lib] = args.hidden if lib == "glowlab" else matched_hidden(lib, target, args.layers, 4 * args.hidden)
    models = {}
    for lib, width in hidden.items():
        torch.manual_seed(0)
        models[lib] = Model(lib, width, args.layers)
        if lib in GLOWS:  # ActNorm's data-dependent initialisation, before timing
            models[lib].log_prob(dequantize(x_train[:256], N_BITS, generator=torch.Generator().manual_seed(0)))
        models[lib].module.eval()
    x_big = dequantize(x_train[torch.arange(1024) % N_TRAIN], N_BITS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        density = interleaved_rates({lib: lambda m=m: m.log_prob(x_big) for lib, m in models.items()}, 1024,
                                    args.reps)
        sampling = interleaved_rates({lib: lambda m=m: m.sample(args.sample_n) for lib, m in models.items()},
                                     args.sample_n, args.reps)
    bpds = {lib: [] for lib in hidden}
    steps = {lib: [] for lib in hidden}
    for seed in range(args.seeds):  # seeds outermost: the libraries take turns
        for lib, width in hidden.items():
            torch.manual_seed(seed)
            model = Model(lib, width, args.layers)
            steps[lib].append(train_for(model, x_train, args.budget, seed))
            bpds[lib].append(held_out_bpd(model, x_test))
    results = {
        lib: {"hidden_features": hidden[lib], "params": models[lib].params, "density_samples_per_s": density[lib],
              "sampling_samples_per_s": sampling[lib], "bpd": bpds[lib], "train_steps": steps[lib],
              "bpd_mean": statistics.fmean(bpds[lib]),
              "bpd_std": statistics.stdev(bpds[lib]) if len(bpds[lib]) > 1 else 0.0}
        for lib in hidden
    }
    return {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "python": platform.python_version()},
        "results": results,
    }


def table(data: dict) -> str:
    rows = ["| library | hidden | params | log_prob samples/s | sample samples/s | held-out bpd (mean ± sd) | steps |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for lib, r in data["results"].items():
        rows.append(f"| {lib} | {r['hidden_features']} | {r['params']:,} | {r['density_samples_per_s']:,.0f} | "
                    f"{r['sampling_samples_per_s']:,.0f} | {r['bpd_mean']:.3f} ± {r['bpd_std']:.3f} | "
                    f"{statistics.median(r['train_steps']):.0f} |")
    return "\n".join(rows)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--libs", default=",".join(LIBS), help="comma-separated subset of " + ",".join(LIBS + GLOWS))
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, default=256, help="glowlab's hidden width (2 hidden layers)")
    p.add_argument("--budget", type=float, default=25.0, help="training seconds per model and seed")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5, help="timing repeats (median)")
    p.add_argument("--sample-n", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke test: tiny models, 0.2 s budgets, 2 seeds")
    p.add_argument("--out", type=Path, default=Path("docs/bench/autoregressive.json"))
    args = p.parse_args(argv)
    args.libs = [s for s in args.libs.split(",") if s]
    if bad := [s for s in args.libs if s not in LIBS + GLOWS]:
        p.error(f"--libs: unknown {bad}; choose from {LIBS + GLOWS}")
    if args.quick:
        args.layers, args.hidden, args.budget, args.seeds, args.reps, args.sample_n = 2, 64, 0.2, 2, 1, 8
    if min(args.layers, args.hidden, args.seeds, args.reps, args.sample_n, args.threads) < 1 or args.budget <= 0:
        p.error("--layers, --hidden, --seeds, --reps, --sample-n and --threads must be >= 1 and --budget > 0")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    data = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2))
    print(table(data))
    print(f"wrote {args.out}")
    if not all(math.isfinite(r["bpd_mean"]) for r in data["results"].values()):
        raise SystemExit("a held-out bpd is not finite")


if __name__ == "__main__":
    main()
