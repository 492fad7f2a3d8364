"""Side-by-side training benchmarks: named ``train.py`` runs, ``--parallel`` at a time, each on
``--threads`` threads, then ``eval.py k=K`` on each checkpoint; one JSON table.

The ``mnist_idx`` 10-minute benchmarks of the README and docs compare experiments that ran at the
same time on the same machine (two 1-thread runs on 2 cores), so neither is favoured by a quieter
machine. Runs start in the order given, seed-major (``--seeds 0 1 --run a=... --run b=...`` runs
a0 b0 | a1 b1 with ``--parallel 2``), so the runs that are compared share their time slot.

Usage::

    OMP_NUM_THREADS=1 python scripts/bench_runs.py --parallel 2 --seeds 0 1 2 --k 16 \\
        --run glow="experiment=mnist_idx_glow" --run flowpp="experiment=mnist_idx_flowpp" \\
        --workdir /tmp/bench --out docs/bench/mnist_idx_flowpp.json

Each row: ``name, seed, test_bpd`` (k = 1, the run's own test), ``test_bpd_eval`` (k = 1 again from
``eval.py``, which evaluates in fp32 whatever precision the run trained in), ``test_bpd_k<K>`` (with
its standard error), ``val_bpd`` (best), ``steps``, ``params`` (the model's, plus the learned
dequantiser's when there is one), for continuous flows the NFE per training step (first, last, mean
of the last tenth of the logged steps) and the run's own metrics.json. The summary holds the
medians over seeds per name; ``--include`` adds the rows of earlier tables (other seeds) to
them. A run that fails is recorded with its error and the rest go on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_run(spec: str) -> tuple[str, list[str]]:
    """``"name=override override ..."`` -> ``(name, overrides)``."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--run wants NAME=\"overrides\", got {spec!r}; e.g. --run glow=\"experiment=mnist_idx_glow\"")
    return name, shlex.split(rest)


def param_counts(ckpt_path: Path) -> dict[str, int]:
    """Parameters of the model and of the learned dequantiser, counted from the checkpoint."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    model = sum(v.numel() for k, v in state.items() if k.startswith("model.") and ".ema" not in k)
    deq = sum(v.numel() for k, v in state.items() if k.startswith("objective.") and "dequant" in k)
    return {"params": model, "dequantizer_params": deq}


def nfe_summary(run_dir: Path) -> dict[str, float]:
    """Continuous flows: NFE per training step (forward + backward) at the first and last logged
    steps and its mean over the last tenth of them, from the run's CSV log; {} for other models."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/nfe_forward") and r.get("train/nfe_backward")]
    if not rows:
        return {}
    nfe = [float(r["train/nfe_forward"]) + float(r["train/nfe_backward"]) for r in rows]
    tail = nfe[-max(1, len(nfe) // 10):]
    return {"nfe_per_step_first": nfe[0], "nfe_per_step_last": nfe[-1],
            "nfe_per_step_last_tenth": sum(tail) / len(tail)}


def run_one(name: str, overrides: list[str], seed: int, args) -> dict:
    run_dir = Path(args.workdir) / f"{name}_s{seed}"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    row: dict = {"name": name, "seed": seed, "overrides": overrides, "run_dir": str(run_dir)}
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"seed={seed}", f"hydra.run.dir={run_dir}",
           "logger=csv", "extras.print_config=false", *args.extra]
    start = time.time()
    if not (run_dir / "metrics.json").exists():  # a rerun of the script reuses finished runs
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return {**row, "error": proc.stderr[-2000:]}
    row["train_wall_s"] = round(time.time() - start, 1)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    ckpt = ckpt if ckpt.exists() else run_dir / "checkpoints" / "last.ckpt"  # as train.py tests it
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    row.update(test_bpd=metrics.get("test/bpd"), val_bpd=metrics.get("best/val_bpd"),
               steps=int(last.get("global_step", 0)), **param_counts(ckpt), **nfe_summary(run_dir), metrics=metrics)
    if args.k > 1:
        ev = run_dir / f"eval_k{args.k}"
        if not (ev / "metrics.json").exists():
            proc = subprocess.run([sys.executable, str(ROOT / "eval.py"), f"ckpt_path={ckpt}", f"k={args.k}",
                                   f"hydra.run.dir={ev}", "extras.print_config=false"],
                                  cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                return {**row, "error": proc.stderr[-2000:]}
        ev_metrics = json.loads((ev / "metrics.json").read_text())
        row["test_bpd_eval"] = ev_metrics["test/bpd"]  # k = 1 again, in eval.py's fp32 whatever the run's precision
        row[f"test_bpd_k{args.k}"] = ev_metrics[f"test/bpd_k{args.k}"]
        row[f"test_bpd_k{args.k}_stderr"] = ev_metrics[f"test/bpd_k{args.k}_stderr"]
    print(json.dumps({k: v for k, v in row.items() if k not in ("metrics", "overrides")}), flush=True)
    return row


def guarded(fn, name, overrides, seed, args) -> dict:
    """``fn``'s row, or the row with the error when it raised: one broken run must not lose the others."""
    try:
        return fn(name, overrides, seed, args)
    except Exception as exc:  # noqa: BLE001 - recorded in the table
        return {"name": name, "seed": seed, "overrides": overrides, "error": f"{type(exc).__name__}: {exc}"}


def included_rows(paths: list[str], names: set[str], new: set[tuple[str, int]]) -> list[dict]:
    """The rows of earlier tables whose name is one of ``names``, tagged with the file they came
    from; a (name, seed) this run produced again is taken from this run."""
    out = []
    for path in paths:
        table = json.loads(Path(path).read_text())
        out += [{**r, "from": path} for r in table["rows"] if r["name"] in names and (r["name"], r["seed"]) not in new]
    return out


def summarise(rows: list[dict], k: int) -> list[dict]:
    """Median over seeds per name of each figure."""
    keys = ["test_bpd", "test_bpd_eval", f"test_bpd_k{k}", "val_bpd", "steps", "params", "dequantizer_params"]
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        # a row with an error counts when its test figure was recovered (its "note" says how)
        done = [r for r in rows if r["name"] == name and r.get("test_bpd") is not None]
        med = {key: statistics.median(r[key] for r in done if r.get(key) is not None)
               for key in keys if any(r.get(key) is not None for r in done)}
        out.append({"name": name, "seeds": [r["seed"] for r in done], **med})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help='NAME="train.py overrides", repeatable')
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--k", type=int, default=16, help="importance samples for eval.py (1: skip that evaluation)")
    p.add_argument("--workdir", default="/tmp/glowlab_bench")
    p.add_argument("--extra", nargs="*", default=[], help="overrides added to every run")
    p.add_argument("--out", required=True, help="JSON file for the rows and the summary")
    p.add_argument("--include", nargs="*", default=[],
                   help="JSON tables of earlier runs of this script (e.g. other seeds): their rows of the "
                        "same names join this table and its medians")
    args = p.parse_args()
    runs = [parse_run(s) for s in args.run]
    jobs = [(name, ov, seed) for seed in args.seeds for name, ov in runs]
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda j: guarded(run_one, *j, args), jobs))
    rows = [*included_rows(args.include, {name for name, _ in runs}, {(r["name"], r["seed"]) for r in rows}), *rows]
    result = {"command": " ".join(shlex.quote(a) for a in sys.argv), "date": time.strftime("%Y-%m-%d"),
              "threads_per_run": args.threads, "parallel": args.parallel, "torch": torch.__version__,
              "summary": summarise(rows, args.k), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
