"""Hydra multirun sweeps (basic grid sweeper and Optuna): a failed job is recorded, not fatal, and
the sweep directory gets a summary table.

* :func:`run_sweep_job` wraps ``train`` inside a multirun job: an exception is logged with its
  traceback and written to the job's ``status.json``, and the job returns ``inf`` (``-inf`` when
  the sweeper maximises), which the Optuna sweeper records as a (bad) completed trial. ``nan`` is
  never returned: optuna 2.10 fails a trial that reports nan and the sweeper then aborts.
* :class:`SweepSummary` (a Hydra callback, see ``conf/hydra/default.yaml``) writes every job's
  ``status.json`` (status, overrides, wall time, error) and, at the end of a multirun, collects
  them with each job's ``metrics.json`` into ``summary.csv`` and ``summary.md`` in the sweep dir.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

__all__ = ["is_multirun", "run_sweep_job", "SweepSummary", "collect_jobs", "write_summary", "STATUS_FILE"]

log = logging.getLogger(__name__)
STATUS_FILE = "status.json"
COLUMNS = ["job", "status", "overrides", "best_val_bpd", "val_bpd", "test_bpd", "wall_time_s", "error", "output_dir"]


def is_multirun() -> bool:
    """True inside a job of ``python train.py -m ...`` (or a config setting ``hydra.mode: MULTIRUN``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _is_rank_zero() -> bool:
    """False in the extra processes a DDP launcher starts: only rank 0 writes status files."""
    return all(int(os.environ.get(k, "0")) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _write_status(out: Path, **fields: Any) -> None:
    if not _is_rank_zero():
        return
    path = out / STATUS_FILE
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**old, **fields}, indent=2, sort_keys=True, default=str) + "\n")


def run_sweep_job(fn: Callable[[DictConfig], dict], cfg: DictConfig, metric: str) -> float:
    """Run ``fn(cfg)`` as one job of a sweep and return ``metrics[metric]`` for the sweeper.

    A failure (exception, missing or non-finite metric) is written to ``status.json`` in the
    job's output dir and returns the worst value (``inf``, or ``-inf`` for ``direction:
    maximize``), so the sweep continues.
    """
    start = time.time()
    sweeper = HydraConfig.get().sweeper
    worst = -math.inf if str(sweeper.get("direction", "minimize")) == "maximize" else math.inf
    try:
        value = fn(cfg).get(metric)
    except Exception as err:  # noqa: BLE001 - any failure of one job must not end the sweep
        log.exception("job failed; the sweep continues")
        _write_status(_output_dir(), status="failed", error=f"{type(err).__name__}: {err}",
                      wall_time_s=time.time() - start)
        return worst
    if value is None or not math.isfinite(float(value)):
        _write_status(_output_dir(), status="failed", error=f"{metric} is {value} (not logged, or diverged)",
                      wall_time_s=time.time() - start)
        return worst
    return float(value)


class SweepSummary(Callback):
    """Writes ``status.json`` for each job and ``summary.csv`` / ``summary.md`` after a multirun."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._start = time.time()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start = time.time()
        stale = _output_dir() / STATUS_FILE
        if self.enabled and _is_rank_zero() and stale.is_file():
            stale.unlink()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self.enabled or not _is_rank_zero():
            return
        out = _output_dir()
        path = out / STATUS_FILE
        fields: dict[str, Any] = {"overrides": list(job_return.overrides or []),
                                  "job": OmegaConf.select(HydraConfig.get(), "job.num", default=0)}
        if not path.is_file():  # run_sweep_job records failures itself
            ok = job_return.status == JobStatus.COMPLETED
            fields.update(status="ok" if ok else "failed", wall_time_s=time.time() - self._start)
            if not ok:
                err = job_return._return_value
                fields["error"] = f"{type(err).__name__}: {err}"
        _write_status(out, **fields)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled and _is_rank_zero():
            rows = write_summary(Path(str(config.hydra.sweep.dir)))
            failed = sum(r["status"] != "ok" for r in rows)
            log.info("sweep summary: %d jobs, %d failed, in %s/summary.md", len(rows), failed, config.hydra.sweep.dir)


def _number(metrics: dict, key: str) -> float | None:
    v = metrics.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def collect_jobs(sweep_dir: str | Path) -> list[dict]:
    """One row per job directory below ``sweep_dir`` (a folder holding ``status.json``), sorted by
    job number: the keys of :data:`COLUMNS`."""
    rows = []
    for status_file in Path(sweep_dir).rglob(STATUS_FILE):
        job_dir = status_file.parent
        status = json.loads(status_file.read_text())
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        wall = _number(metrics, "wall_time_s") or status.get("wall_time_s")
        rows.append({
            "job": status.get("job", job_dir.name), "status": status.get("status", "unknown"),
            "overrides": " ".join(status.get("overrides", [])),
            "best_val_bpd": _number(metrics, "best/val_bpd"), "val_bpd": _number(metrics, "val/bpd"),
            "test_bpd": _number(metrics, "test/bpd"), "wall_time_s": wall,
            "error": (status.get("error") or "").strip(), "output_dir": str(job_dir),
        })
    return sorted(rows, key=lambda r: (int(r["job"]) if str(r["job"]).isdigit() else 1 << 30, str(r["job"])))


def _cell(v: Any, md: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if md else repr(v)
    text = str(v)
    if md:
        first = text.splitlines()[0] if text else ""
        text = (first[:160] + "...") if len(first) > 160 else first
        text = text.replace("|", "\\|")
    return text


def write_summary(sweep_dir: str | Path) -> list[dict]:
    """Write ``summary.csv`` (all columns, full precision) and ``summary.md`` (a table, errors cut
    to their first line) into ``sweep_dir``; return the rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect_jobs(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with (sweep_dir / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: _cell(r[k]) for k in COLUMNS} for r in rows)
    # the table shows each job's own overrides; those shared by every job are listed once
    split = [r["overrides"].split() for r in rows]
    common = [o for o in split[0] if all(o in s for s in split)] if len(rows) > 1 else []
    own = [{**r, "overrides": " ".join(o for o in s if o not in common)} for r, s in zip(rows, split)]
    cols = COLUMNS[:-1]
    lines = [f"# Sweep summary: {sweep_dir}", "",
             f"{len(rows)} jobs, {sum(r['status'] == 'ok' for r in rows)} ok. "
             "bpd in bits/dim; wall time in seconds.", ""]
    if common:
        lines += [f"Overrides of every job: `{' '.join(common)}`", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r[c], md=True) for c in cols) + " |" for r in own]
    ok = [r for r in own if r["status"] == "ok" and math.isfinite(r["best_val_bpd"] or math.nan)]
    if ok:
        best = min(ok, key=lambda r: r["best_val_bpd"])
        lines += ["", f"Best: job {best['job']} ({best['overrides']}), best val/bpd {best['best_val_bpd']:.4f}."]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return rows
