"""Hydra multirun sweeps (basic grid sweeper and Optuna): a failed job is recorded, not fatal, and
the sweep directory gets a summary table.

* :func:`run_sweep_job` wraps ``train`` inside a multirun job: an exception is logged with its
  traceback and written to the job's ``status.json``, and the job returns ``inf`` (``-inf`` when
  the sweeper maximises), which the Optuna sweeper records as a (bad) completed trial. ``nan`` is
  never returned: optuna 2.10 fails a trial that reports nan and the sweeper then aborts.
* :class:`SweepSummary` (a Hydra callback, see ``conf/hydra/default.yaml``) writes every job's
  ``status.json`` (``running`` when the job starts; then status, overrides, wall time, error) and,
  at the end of a multirun, collects them with each job's ``metrics.json`` into ``summary.csv``
  and ``summary.md`` in the sweep dir.

Status files are written atomically (:mod:`glowlab.atomic`), and the summary tolerates a job that
died: a job still ``running`` at the end was killed, and an unreadable ``status.json`` or
``metrics.json`` (a full disk) gives a row with the reason instead of a crash.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from glowlab.atomic import atomic_write_text

__all__ = ["STATUS_FILE", "SweepSummary", "collect_jobs", "is_multirun", "run_sweep_job", "write_summary"]

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


def _read_json(path: Path) -> tuple[dict, str | None]:
    """``(content, None)``, or ``({}, reason)`` when the file is missing, empty or not a JSON object."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, f"no {path.name}"
    except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError; an empty file after a full disk
        return {}, f"{path.name} unreadable ({type(err).__name__}: {err})"
    if not isinstance(content, dict):
        return {}, f"{path.name} holds no JSON object"
    return content, None


def _write_status(out: Path, **fields: Any) -> None:
    if not _is_rank_zero():
        return
    path = out / STATUS_FILE
    old, _ = _read_json(path)
    atomic_write_text(path, json.dumps({**old, **fields}, indent=2, sort_keys=True, default=str) + "\n")


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
        if self.enabled and _is_rank_zero():
            if stale.is_file():
                stale.unlink()
            # replaced when the job ends; still "running" in the summary means the job was killed
            _write_status(_output_dir(), status="running", overrides=list(HydraConfig.get().overrides.task),
                          job=OmegaConf.select(HydraConfig.get(), "job.num", default=0))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self.enabled or not _is_rank_zero():
            return
        out = _output_dir()
        fields: dict[str, Any] = {"overrides": list(job_return.overrides or []),
                                  "job": OmegaConf.select(HydraConfig.get(), "job.num", default=0)}
        if _read_json(out / STATUS_FILE)[0].get("status") in (None, "running"):  # run_sweep_job records failures
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
        status, status_problem = _read_json(status_file)
        metrics, metrics_problem = _read_json(job_dir / "metrics.json")
        state = status.get("status", "unknown")
        error = (status.get("error") or "").strip()
        if status_problem:  # e.g. emptied by a full disk: the job's outcome is unknown
            state, error = "unknown", f"{status_problem}; see the job's log"
        elif state == "running":
            state, error = "died", "the job never finished (killed, out of memory, or the machine stopped)"
        elif state == "ok" and metrics_problem and metrics_problem != "no metrics.json":
            error = metrics_problem
        wall = _number(metrics, "wall_time_s") or status.get("wall_time_s")
        rows.append({
            "job": status.get("job", job_dir.name), "status": state,
            "overrides": " ".join(str(o) for o in status.get("overrides", [])),
            "best_val_bpd": _number(metrics, "best/val_bpd"), "val_bpd": _number(metrics, "val/bpd"),
            "test_bpd": _number(metrics, "test/bpd"), "wall_time_s": wall,
            "error": error, "output_dir": str(job_dir),
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
    table = io.StringIO(newline="")
    w = csv.DictWriter(table, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows({k: _cell(r[k]) for k in COLUMNS} for r in rows)
    atomic_write_text(sweep_dir / "summary.csv", table.getvalue())
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
    atomic_write_text(sweep_dir / "summary.md", "\n".join(lines) + "\n")
    return rows
