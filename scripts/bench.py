"""Throughput and memory benchmark of glowlab's Glow (and of a plain PyTorch Glow for comparison).

Usage::

    python scripts/bench.py --config small|cifar|mnist [--device cpu|cuda]
        [--precision 32|bf16-mixed|16-mixed] [--memory-saving none|checkpoint|reversible[,...]]
        [--baseline] [--compile] [--optimizer own|forloop|foreach|fused] [--batch N] [--repeat N]
        [--json out.json]

For each configuration and memory-saving mode it measures, in a fresh subprocess (so that the
peak memory of one measurement does not leak into the next):

* ``train``: training throughput in images/s: ``-log_prob(x).mean()``, backward and an Adam
  step (each implementation's own Adam kernel unless ``--optimizer`` forces one), the median of
  ``--steps`` (>= 10) steps after ``--warmup`` steps (the first of which initialises ActNorm);
* ``sample``: sampling throughput in images/s, 64 samples at temperature 0.7 (median of
  ``--sample-reps`` draws, eval mode, no grad);
* ``log_prob``: evaluation throughput in images/s (eval mode, no grad, batch of the config);
* ``peak_mem``: peak memory of a training step, in a separate fresh worker: the process's peak
  RSS on the CPU (measured with an allocator setting that makes RSS follow the live tensors, see
  ``measure_memory``), ``torch.cuda.max_memory_allocated`` on a GPU. ``runtime_mem`` is the RSS
  before the model is built (the interpreter, torch and the code training runs: about 0.68 GB
  with PyTorch 2.14's CUDA build), so ``train_mem = peak_mem - runtime_mem`` is what training holds at
  its peak (parameters, Adam state, gradients, activations), the CPU counterpart of the GPU
  figure. ``steady_mem`` is what persists between steps, so ``peak_mem - steady_mem`` is what a
  step adds: activations, gradients and temporaries.

``--baseline`` also runs ``scripts/plain_glow.py``, a deliberately plain PyTorch Glow of the same
architecture, and prints the speedups. Timings on a shared machine are noisy: check ``uptime``,
and repeat with more ``--steps`` if the load is high.

Configs (all Glow, affine coupling, LU 1x1 conv):

* ``small``: 3x32x32, levels 3, depth 8, hidden 128, batch 32;
* ``cifar``: 3x32x32, levels 3, depth 32, hidden 512, batch 16 on the CPU and 64 on a GPU;
* ``mnist``: 1x28x28, levels 2, depth 16, hidden 128, batch 64.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

CONFIGS = {
    "small": dict(image_shape=(3, 32, 32), levels=3, depth=8, hidden_channels=128, batch={"cpu": 32, "cuda": 32}),
    "cifar": dict(image_shape=(3, 32, 32), levels=3, depth=32, hidden_channels=512, batch={"cpu": 16, "cuda": 64}),
    "mnist": dict(image_shape=(1, 28, 28), levels=2, depth=16, hidden_channels=128, batch={"cpu": 64, "cuda": 64}),
    "tiny": dict(image_shape=(3, 8, 8), levels=2, depth=2, hidden_channels=8, batch={"cpu": 4, "cuda": 4}),  # tests
}
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
MODES = ("none", "checkpoint", "reversible")
SAMPLES, TEMPERATURE = 64, 0.7
LR = 1e-5
# glibc settings for the timing workers (every row, the baseline included): tensors up to 32 MiB
# come from the heap, which is never trimmed, so freed activations are reused instead of being
# returned to the OS and page-faulted back in on the next batch. Page faults are slow in a VM; with
# glibc's defaults a measurement depends on what ran before it in the process (e.g. sampling after a
# memory-hungry training phase is faster than after a lean one). `--malloc system` keeps the defaults.
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(16 << 30),
                "MALLOC_TOP_PAD_": str(64 << 20)}


# -- the measurement (runs in a worker subprocess) ------------------------------------------------
def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _median_time(fn, reps: int, device: str) -> float:
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def import_model_class(spec: dict):
    if spec["impl"] == "plain":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from plain_glow import PlainGlow

        return PlainGlow
    import glowlab.optim  # noqa: F401  (imported here so the runtime baseline includes it)
    from glowlab.models import Glow

    return Glow


def build_model(spec: dict, model_class):
    cfg = CONFIGS[spec["config"]]
    kw = dict(levels=cfg["levels"], depth=cfg["depth"], hidden_channels=cfg["hidden_channels"])
    if spec["impl"] == "plain":
        return model_class(cfg["image_shape"], **kw)
    return model_class(cfg["image_shape"], coupling="affine", permutation="lu",
                       memory_saving=spec["memory_saving"], **kw)


def make_adam(spec: dict, params):
    """Adam at lr 1e-5 (the size of a warm-up's first steps: at 1e-4 without warm-up the depth-32
    ``cifar`` Glow can diverge on its one random batch, and its samples become non-finite)
    and the name of its kernel. ``optimizer="own"``: what each implementation
    does by default (the plain Glow: ``torch.optim.Adam(params)``, a per-parameter loop on the CPU;
    glowlab: ``glowlab.optim.make_optimizer``'s default for Adam, the fused kernel; training's
    default Adamax gets the ``foreach`` kernels); ``forloop``/``foreach``/``fused``: that kernel for
    every row."""
    import torch

    impl = spec["optimizer"]
    if impl == "own" and spec["impl"] == "plain":
        return torch.optim.Adam(params, lr=LR), "torch default"
    from glowlab.optim import make_optimizer

    opt = make_optimizer("adam", params, lr=LR, implementation="auto" if impl == "own" else impl)
    return opt, "fused" if opt.defaults.get("fused") else "foreach" if opt.defaults.get("foreach") else "forloop"


def _runtime_rss(spec: dict, model_class) -> int:
    """RSS of the interpreter, torch and the code that training runs: measured after one training
    step of a tiny model of the same class (which pages in the code of the kernels' libraries,
    LAPACK and oneDNN), once that model is freed."""
    import gc

    import torch

    tiny = build_model(dict(spec, config="tiny"), model_class)
    opt, _ = make_adam(spec, tiny.parameters())
    (-tiny.log_prob(torch.rand(4, *CONFIGS["tiny"]["image_shape"]) - 0.5).mean()).backward()
    opt.step()
    with torch.no_grad():
        tiny.eval()
        tiny.sample(2, temperature=TEMPERATURE)
    del tiny, opt
    gc.collect()
    return _rss_bytes()


def _profile(train_step, device: str, steps: int = 5) -> None:
    """Print (to stderr) where ``steps`` training steps spend their time, by operator, and on the
    CPU the share of the convolutions (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step()
        _sync(device)
    events = prof.key_averages()
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=attr, row_limit=15), file=sys.stderr)
    if device == "cpu":  # on a GPU the kernels are named by the library, not by the aten op
        total = sum(e.self_cpu_time_total for e in events)
        conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
        print(f"convolutions (forward and backward): {100 * conv / max(total, 1):.0f}% of the self time of "
              f"{steps} training steps", file=sys.stderr, flush=True)


def measure(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = spec["device"]
    torch.manual_seed(0)
    cfg = CONFIGS[spec["config"]]
    batch = spec.get("batch") or cfg["batch"][device]
    model_class = import_model_class(spec)
    runtime = _runtime_rss(spec, model_class) if device == "cpu" and spec.get("phase") == "memory" else 0
    model = build_model(spec, model_class).to(device)
    if spec.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    opt, opt_name = make_adam(spec, model.parameters())
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, *cfg["image_shape"], generator=gen) - 0.5).to(device)
    precision = spec["precision"]
    amp_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device, dtype=amp_dtype)) if amp_dtype else nullcontext
    scaler = torch.amp.GradScaler(device) if precision == "16-mixed" else None
    if spec.get("compile"):
        model.compile_levels()
    log_prob = model.log_prob

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = -log_prob(x).mean()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss

    model.train()
    if spec.get("phase") == "memory":
        return dict(config=spec["config"], impl=spec["impl"], memory_saving=spec["memory_saving"], device=device,
                    optimizer=opt_name, precision=precision, batch=batch, compile=bool(spec.get("compile")),
                    runtime_mem_gb=runtime / 2**30, **measure_memory(spec, model, opt, train_step))
    for _ in range(spec["warmup"]):
        train_step()
    train_s = _median_time(train_step, spec["steps"], device)
    loss = float(train_step())

    model.eval()
    with torch.no_grad():
        def evaluate():
            with autocast():
                return log_prob(x)

        evaluate()
        lp_s = _median_time(evaluate, spec["eval_reps"], device)

        def sample():
            with autocast():
                return model.sample(SAMPLES, temperature=TEMPERATURE)

        s = sample()
        sample_finite = bool(torch.isfinite(s).all())
        sample_s = _median_time(sample, spec["sample_reps"], device)
    if spec.get("profile"):  # after every timing: a profiler can leave hooks that slow later work
        model.train()
        _profile(train_step, device)
    return dict(
        config=spec["config"], impl=spec["impl"], memory_saving=spec["memory_saving"], device=device,
        optimizer=opt_name, malloc=spec.get("malloc", "system"),
        precision=precision, batch=batch, compile=bool(spec.get("compile")),
        train_img_s=batch / train_s, sample_img_s=SAMPLES / sample_s, log_prob_img_s=batch / lp_s,
        final_loss=loss,
        sample_finite=sample_finite, train_steps=spec["steps"],
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
    )


def measure_memory(spec: dict, model, opt, train_step) -> dict:
    """Peak memory of one training step (after two warm-up steps, the first of which initialises
    ActNorm). ``steady`` is what persists between steps (interpreter and torch, parameters, Adam
    state); ``peak - steady`` is what a step adds (activations, gradients, temporaries).

    On the CPU this runs in a worker started with ``MALLOC_MMAP_THRESHOLD_=65536``, so that every
    tensor above 64 KiB is its own mapping and is returned to the OS when freed: the RSS then follows
    the live tensors, and the kernel's high-water mark (``VmHWM``, reset through
    ``/proc/self/clear_refs``) is the step's true peak rather than the allocator's hoard.
    """
    import gc

    import torch

    device = spec["device"]
    for _ in range(2):
        train_step()
    opt.zero_grad(set_to_none=True)
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        steady = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        train_step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        steady = _rss_bytes()
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
            f.write("5")
        train_step()
        peak = _status_bytes("VmHWM")
    return dict(peak_mem_gb=peak / 2**30, steady_mem_gb=steady / 2**30)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


# -- the driver -------------------------------------------------------------------------------------
def _cpu_busy(interval: float = 1.0) -> float:
    """Fraction of the machine's CPU time spent busy over ``interval`` seconds (Linux /proc/stat)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(a) for a in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)

    t1, i1 = read()
    time.sleep(interval)
    t2, i2 = read()
    return 1.0 - (i2 - i1) / max(t2 - t1, 1)


def wait_until_quiet(max_wait: float, threshold: float = 0.1) -> float:
    """Wait (up to ``max_wait`` s) until the CPUs have been idle for 3 s; return the last busy fraction."""
    start, quiet, busy = time.time(), 0, 0.0
    while time.time() - start < max_wait:
        busy = _cpu_busy()
        quiet = quiet + 1 if busy < threshold else 0
        if quiet >= 3:
            break
    return busy


def run_worker(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter and return its result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    env = dict(os.environ)
    if spec.get("phase") == "memory" and spec["device"] == "cpu":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # see measure_memory
    elif spec.get("malloc") == "tuned":
        env.update(TUNED_MALLOC)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode == 0 and spec.get("profile") and spec.get("phase") != "memory":
        sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {spec}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _num(r: dict, key: str) -> str:
    return f"{r[key]:.1f}" if key in r else "-"


def _mem_gb(r: dict, what: str) -> float | None:
    """``peak`` (RSS or CUDA peak), ``train`` (peak less the runtime) or ``adds`` (peak less steady)."""
    if "peak_mem_gb" not in r:
        return None
    less = {"peak": 0.0, "train": r.get("runtime_mem_gb", 0.0), "adds": r["steady_mem_gb"]}[what]
    return r["peak_mem_gb"] - less


def _mem(r: dict, what: str) -> str:
    v = _mem_gb(r, what)
    return "-" if v is None else f"{v:.2f}"


def _table(rows: list[dict]) -> str:
    head = ["config", "impl", "memory_saving", "precision", "optimizer", "batch", "train img/s", "sample img/s",
            "log_prob img/s", "peak mem GB", "train mem GB", "step adds GB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        impl = r["impl"] + (" +compile" if r.get("compile") else "")
        lines.append("| " + " | ".join([
            r["config"], impl, r["memory_saving"] if r["impl"] != "plain" else "-", r["precision"], r["optimizer"],
            str(r["batch"]), _num(r, "train_img_s"), _num(r, "sample_img_s"), _num(r, "log_prob_img_s"),
            _mem(r, "peak"), _mem(r, "train"), _mem(r, "adds"),
        ]) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="small", help="small, cifar or mnist (comma-separated for several)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="32", choices=PRECISIONS)
    p.add_argument("--memory-saving", default="none",
                   help="none, checkpoint or reversible (comma-separated for several)")
    p.add_argument("--baseline", action="store_true",
                   help="also measure the plain PyTorch Glow (scripts/plain_glow.py)")
    p.add_argument("--compile", action="store_true",
                   help="model.compile_levels(): torch.compile each level (glowlab only)")
    p.add_argument("--optimizer", default="own", choices=["own", "forloop", "foreach", "fused"],
                   help="Adam's kernel: 'own' is each implementation's default (plain: torch.optim.Adam's "
                        "per-parameter loop; glowlab: glowlab.optim's default for Adam, the fused kernel), the "
                        "others force that kernel on every row")
    p.add_argument("--batch", type=int, default=None, help="override the config's batch size")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (the median is reported; >= 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps first (ActNorm init, allocator)")
    p.add_argument("--sample-reps", type=int, default=None,
                   help="timed sampling runs (default 5; 3 for cifar on the CPU)")
    p.add_argument("--eval-reps", type=int, default=5, help="timed log_prob evaluations")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the workers")
    p.add_argument("--channels-last", action="store_true", help="model.to(memory_format=channels_last)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory measurement (no timings)")
    p.add_argument("--profile", action="store_true",
                   help="print a torch.profiler table of 5 training steps per row (to stderr), after the "
                        "timed steps of the first round")
    p.add_argument("--malloc", default="tuned", choices=["tuned", "system"],
                   help="glibc allocator settings of the timing workers (see TUNED_MALLOC); the same for every row")
    p.add_argument("--repeat", type=int, default=1,
                   help="measure every row this many times, round-robin (each a median over --steps)")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                   help="before each measurement, wait up to this long for the CPUs to be idle (shared machines)")
    p.add_argument("--aggregate", default="median", choices=["median", "best"],
                   help="how --repeat rounds combine: their median, or the best (the least disturbed by "
                        "other processes on a shared machine)")
    p.add_argument("--json", default=None, help="write the results (and the machine) to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return []
    if args.memory_only and (args.no_memory or args.repeat != 1):
        p.error("--memory-only measures once: drop --no-memory and --repeat")
    if args.steps < 10:
        p.error("--steps must be at least 10 (the reported figure is a median)")
    configs = args.config.split(",")
    modes = args.memory_saving.split(",")
    for c in configs:
        if c not in CONFIGS:
            p.error(f"unknown config {c!r}; choose from {sorted(CONFIGS)}")
    for m in modes:
        if m not in MODES:
            p.error(f"unknown memory saving mode {m!r}; choose from {MODES}")

    import torch

    rows = []
    for config in configs:
        specs = []
        if args.baseline:
            specs.append(dict(impl="plain", memory_saving="none"))
        specs += [dict(impl="glowlab", memory_saving=m) for m in modes]
        for s in specs:
            s.update(config=config, device=args.device, precision=args.precision, steps=args.steps,
                     optimizer=args.optimizer, malloc=args.malloc,
                     warmup=args.warmup, eval_reps=args.eval_reps, threads=args.threads, batch=args.batch,
                     sample_reps=args.sample_reps or (3 if config == "cifar" and args.device == "cpu" else 5),
                     compile=args.compile and s["impl"] == "glowlab", channels_last=args.channels_last,
                     profile=args.profile)
        # --repeat rounds run the rows round-robin, so a burst of load on a shared machine hits one
        # round of every row rather than all rounds of one row
        rounds: list[list[dict]] = [[] for _ in specs]
        for rep in range(args.repeat):
            for i, s in enumerate(specs):
                busy = wait_until_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                t0 = time.time()
                r = {} if args.memory_only else run_worker(dict(s, profile=s["profile"] and rep == 0))
                r["cpu_busy_before"] = busy
                if not args.no_memory and rep == 0:
                    r.update(run_worker(dict(s, phase="memory")))
                r["wall_s"] = time.time() - t0
                print(f"  [{rep + 1}/{args.repeat}] {config:6s} {r['impl']:8s} {r['memory_saving']:10s} "
                      f"train {_num(r, 'train_img_s'):>8s} img/s  sample {_num(r, 'sample_img_s'):>8s} img/s  "
                      f"log_prob {_num(r, 'log_prob_img_s'):>8s} img/s  peak {_mem(r, 'peak')} GB  "
                      f"({r['wall_s']:.0f} s)",
                      file=sys.stderr, flush=True)
                rounds[i].append(r)
        agg = statistics.median if args.aggregate == "median" else max
        for runs in rounds:
            r = dict(runs[0])
            for key in ("train_img_s", "sample_img_s", "log_prob_img_s"):
                if key not in r:
                    continue
                r[key] = agg(run[key] for run in runs)
                r[key + "_all"] = [run[key] for run in runs]
            r["repeats"] = len(runs)
            rows.append(r)
    print(_table(rows))
    speedups = []
    for config in configs:
        base = next((r for r in rows if r["config"] == config and r["impl"] == "plain"), None)
        ref_none = next((r for r in rows if r["config"] == config and r["impl"] == "glowlab"
                         and r["memory_saving"] == "none"), None)
        for r in rows:
            if r["config"] != config or r["impl"] == "plain":
                continue
            if base and "train_img_s" in r:
                speedups.append(f"{config} {r['memory_saving']}: train x{r['train_img_s'] / base['train_img_s']:.2f}, "
                                f"sample x{r['sample_img_s'] / base['sample_img_s']:.2f}, "
                                f"log_prob x{r['log_prob_img_s'] / base['log_prob_img_s']:.2f} vs plain")
            if ref_none and r is not ref_none and "peak_mem_gb" in r:
                ratio = {k: _mem_gb(r, k) / max(_mem_gb(ref_none, k), 1e-9) for k in ("peak", "train", "adds")}
                speedups.append(f"{config} {r['memory_saving']}: peak memory {ratio['peak']:.2f} of none's "
                                f"(training memory {ratio['train']:.2f}, what a step adds {ratio['adds']:.2f})"
                                + (f"; train speed x{r['train_img_s'] / ref_none['train_img_s']:.2f} of none"
                                   if "train_img_s" in r else ""))
    if speedups:
        print("\n" + "\n".join(speedups))
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    machine = dict(platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count(),
                   torch=torch.__version__, threads=args.threads or torch.get_num_threads(), load_avg=load,
                   gpu=torch.cuda.get_device_name(0) if args.device == "cuda" and torch.cuda.is_available() else None,
                   date=time.strftime("%Y-%m-%d %H:%M:%S"),
                   command=" ".join(["python", "scripts/bench.py", *(argv or sys.argv[1:])]))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=machine, results=rows), indent=2))
    return rows


if __name__ == "__main__":
    main()
